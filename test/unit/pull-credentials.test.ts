import { test } from "node:test";
import assert from "node:assert/strict";
import { decode } from "@nats-io/jwt";
import { accountJwt, createAuthority, issueController, issueDevice, parseAuthority, publicKeyOf, revoke, serverAuthConfig, userOf } from "../../core/pull/credentials.js";
import { deviceName, reportDevice, reportSubject } from "../../core/pull/subjects.js";

const authority = createAuthority("lab");

test("a device's user JWT names the device and carries no permissions of its own: the account's template decides", async () => {
  const pi = await issueDevice(authority, "pi1");
  const claims = decode<Record<string, unknown>>(pi.jwt);
  assert.equal(claims.name, "pi1");
  assert.equal(claims.sub, pi.publicKey);
  assert.equal(claims.iss, publicKeyOf(authority.deviceSignerSeed), "signed by the device signing key");
  assert.equal(claims.nats.issuer_account, publicKeyOf(authority.accountSeed));
  assert.equal(claims.nats.pub, undefined);
  assert.equal(claims.nats.sub, undefined);
  assert.match(pi.creds, /BEGIN NATS USER JWT[\s\S]+BEGIN USER NKEY SEED/);
  assert.deepEqual(userOf(pi.creds), { publicKey: pi.publicKey, name: "pi1" });

  const account = decode<{ signing_keys: { key: string; template: { pub: { allow: string[] }; sub: { allow: string[] } } }[] }>(await accountJwt(authority));
  const [scoped] = account.nats.signing_keys!;
  assert.equal(scoped.key, publicKeyOf(authority.deviceSignerSeed));
  assert.ok(scoped.template.pub.allow.includes("reports.{{name()}}.*"));
  assert.ok(scoped.template.sub.allow.includes("_INBOX_dev.{{name()}}.>"));
  assert.ok(
    scoped.template.pub.allow.every((s) => !s.includes(">")),
    "no device may publish under a wildcard tail",
  );
});

test("names that would widen the template are refused: a device name is one subject token", async () => {
  for (const bad of ["*", ">", "a.b", "a b", "", "-x", "x".repeat(65)]) await assert.rejects(issueDevice(authority, bad), /NATS subject token/, bad);
  assert.equal(deviceName("pi-1_A"), "pi-1_A");
  assert.equal(reportSubject("pi1", "result"), "reports.pi1.result");
  assert.equal(reportDevice("reports.pi1.result"), "pi1");
  assert.equal(reportDevice("reports.a.b.c"), null);
});

test("revocation puts the user's key in the account JWT; the server's config names no device", async () => {
  const pi = await issueDevice(authority, "pi7");
  const at = new Date("2026-01-02T03:04:05Z");
  const revoked = revoke(authority, pi.publicKey, at);
  assert.deepEqual(authority.revocations, {}, "the original is unchanged");
  const account = decode<{ revocations: Record<string, number> }>(await accountJwt(revoked));
  assert.deepEqual(account.nats.revocations, { [pi.publicKey]: at.getTime() / 1000 });
  assert.throws(() => revoke(authority, "pi7"), /not a NATS user public key/);

  const config = await serverAuthConfig(revoked, "/var/lib/nats/jwt");
  assert.ok(!config.includes(pi.publicKey) && !config.includes("pi7"), "no device in the server's config (the revocation is inside the signed account JWT)");
  assert.match(config, /resolver \{\n  type: full/);
  const controller = await issueController(authority);
  assert.equal(decode(controller.jwt).iss, publicKeyOf(authority.accountSeed));
});

test("an authority file read back names what is wrong", () => {
  assert.deepEqual(parseAuthority(JSON.stringify(authority), "fleet.json"), authority);
  assert.throws(() => parseAuthority("{", "fleet.json"), /fleet.json: not JSON/);
  assert.throws(() => parseAuthority(JSON.stringify({ ...authority, accountSeed: "x" }), "fleet.json"), /"accountSeed" is missing or not an NKey seed/);
});
