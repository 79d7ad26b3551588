// Enrolment by one-time token: the token file, the device's signed request, and the
// credentials behind them (pure logic; test/integration/pull-enrolment.test.ts runs it
// against a real cluster).
import { test } from "node:test";
import assert from "node:assert/strict";
import { decode } from "@nats-io/jwt";
import { createUser } from "@nats-io/nkeys";
import {
  accountJwt,
  createAuthority,
  deviceJwtFor,
  forgetRevocations,
  issueEnrolmentUser,
  parseAuthority,
  publicKeyOf,
  revoke,
  withEnrolmentSigner,
} from "../../core/pull/credentials.js";
import { openRequest, parseToken, signRequest, tokenText, TOKEN_FORMAT } from "../../core/pull/enrolment.js";
import { enrolDevice, enrolSubject } from "../../core/pull/subjects.js";

const authority = createAuthority("lab");
const RECIPIENT = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";
const VERIFY_KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";

test("a token's user is named as the device, scoped to enrolment only, and expires", async () => {
  const expires = new Date(Date.now() + 3600_000);
  const token = await issueEnrolmentUser(authority, "pi9", expires);
  const claims = decode<Record<string, unknown>>(token.jwt);
  assert.equal(claims.name, "pi9");
  assert.equal(claims.iss, publicKeyOf(authority.enrolmentSignerSeed!), "signed by the enrolment signing key, not the device one");
  assert.equal(claims.exp, Math.floor(expires.getTime() / 1000));

  const account = decode<{ signing_keys: { key: string; role: string; template: { pub: { allow: string[] }; sub: { allow: string[] } } }[] }>(await accountJwt(authority));
  const enrolment = account.nats.signing_keys!.find((k) => k.key === publicKeyOf(authority.enrolmentSignerSeed!))!;
  assert.equal(enrolment.role, "enrolment");
  assert.deepEqual(enrolment.template.pub.allow, ["enrol.{{name()}}", "$JS.API.DIRECT.GET.KV_desired.$KV.desired.jwt.{{name()}}"]);
  assert.ok(!enrolment.template.sub.allow.some((s) => s.includes("dev.") || s.includes("reports")), "nothing of desired state or reports");
});

test("a fleet made before tokens gets an enrolment signing key once; its other keys stay", async () => {
  const { enrolmentSignerSeed: _, ...older } = authority;
  const read = parseAuthority(JSON.stringify(older), "authority.json");
  assert.equal(read.enrolmentSignerSeed, undefined);
  const upgraded = withEnrolmentSigner(read);
  assert.match(upgraded.enrolmentSignerSeed!, /^SA/);
  assert.equal(upgraded.deviceSignerSeed, authority.deviceSignerSeed);
  assert.equal(withEnrolmentSigner(upgraded), upgraded, "a second call changes nothing");
  await assert.rejects(issueEnrolmentUser(read, "pi9", new Date()), /no enrolment signing key/);
});

test("the device's JWT is for the key it made: the controller never sees its seed", async () => {
  const user = createUser();
  const jwt = await deviceJwtFor(authority, "pi9", user.getPublicKey());
  const claims = decode<Record<string, unknown>>(jwt);
  assert.equal(claims.sub, user.getPublicKey());
  assert.equal(claims.name, "pi9");
  assert.equal(claims.iss, publicKeyOf(authority.deviceSignerSeed), "a device user like any other");
  assert.throws(() => deviceJwtFor(authority, "pi9", "not-a-key"), /not a NATS user public key/);
});

test("a token file reads back; what is wrong is named with the file and never shows its credentials", async () => {
  const expires = new Date("2027-01-01T00:00:00Z");
  const creds = (await issueEnrolmentUser(authority, "pi9", expires)).creds;
  const text = tokenText({ device: "pi9", servers: ["10.0.0.1:4222"], expires, credentials: creds, verifyKey: VERIFY_KEY });
  assert.deepEqual(parseToken(text, "pi9.token"), { device: "pi9", servers: ["10.0.0.1:4222"], expires, credentials: creds, verifyKey: VERIFY_KEY });
  const doc = JSON.parse(text);
  const cases: [unknown, RegExp][] = [
    ["{", /pi9.token: not an enrolment token \(not JSON\)/],
    [{ ...doc, format: "x" }, new RegExp(`format is not ${TOKEN_FORMAT}`)],
    [{ ...doc, device: "a.b" }, /"device" is not a device name/],
    [{ ...doc, servers: [] }, /"servers" must list/],
    [{ ...doc, expires: "soon" }, /"expires" is not a time/],
    [{ ...doc, credentials: "x" }, /"credentials" are not NATS credentials/],
    [{ ...doc, verify_key: "x" }, /"verify_key" is not a PEM public key/],
  ];
  const seed = /SU[A-Z2-7]{56}/.exec(creds)![0];
  for (const [bad, message] of cases) {
    const error = (() => {
      try {
        parseToken(typeof bad === "string" ? bad : JSON.stringify(bad), "pi9.token");
      } catch (e) {
        return e as Error;
      }
    })();
    assert.ok(error, `accepted ${JSON.stringify(bad).slice(0, 40)}`);
    assert.match(error.message, message);
    assert.ok(!error.message.includes(seed), "the token's seed is in an error message");
  }
});

test("a request opens only as signed, for the device its subject names", () => {
  const user = createUser();
  const data = signRequest("pi9", user, RECIPIENT, new Date("2026-12-06T00:00:00Z"));
  assert.deepEqual(openRequest(data, enrolSubject("pi9")), { device: "pi9", user: user.getPublicKey(), ageRecipient: RECIPIENT, at: "2026-12-06T00:00:00.000Z" });
  assert.equal(enrolDevice("enrol.pi9"), "pi9");
  assert.equal(enrolDevice("enrol.a.b"), null);

  assert.throws(() => openRequest(data, enrolSubject("pi8")), /for "pi9" but was sent as "pi8"/);
  const envelope = JSON.parse(new TextDecoder().decode(data));
  const payload = JSON.parse(Buffer.from(envelope.payload, "base64").toString());
  const reseal = (p: unknown, signature = envelope.signature) =>
    new TextEncoder().encode(JSON.stringify({ ...envelope, payload: Buffer.from(JSON.stringify(p)).toString("base64"), signature }));
  // another age key under the same signature: whoever changed it does not hold the user seed
  assert.throws(() => openRequest(reseal({ ...payload, age_recipient: RECIPIENT.replace("qyqs3", "qyqs4") }), "enrol.pi9"), /signature does not match/);
  // a key swapped for the thief's, signature kept
  assert.throws(() => openRequest(reseal({ ...payload, user: createUser().getPublicKey() }), "enrol.pi9"), /signature does not match/);
  assert.throws(() => openRequest(reseal(payload, "AAAA"), "enrol.pi9"), /signature does not match/);
  assert.throws(() => openRequest(new TextEncoder().encode("nope"), "enrol.pi9"), /not JSON/);
  assert.throws(() => openRequest(reseal({ ...payload, user: "x" }), "enrol.pi9"), /names no NATS user public key/);
});

test("revocations of expired token users can be forgotten; the others stay", async () => {
  const [a, b] = [createUser().getPublicKey(), createUser().getPublicKey()];
  const revoked = revoke(revoke(authority, a), b);
  const pruned = forgetRevocations(revoked, [a, createUser().getPublicKey()]);
  assert.deepEqual(Object.keys(pruned.revocations), [b]);
  assert.deepEqual(Object.keys(revoked.revocations).sort(), [a, b].sort(), "the original is unchanged");
  const account = decode<{ revocations: Record<string, number> }>(await accountJwt(pruned));
  assert.deepEqual(Object.keys(account.nats.revocations ?? {}), [b]);
});
