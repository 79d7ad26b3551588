import { test } from "node:test";
import assert from "node:assert/strict";
import { BundleRefused, createDeviceKey, createFleetSigningKey, extractSecrets, keyId, openBundle, sealBundle, type RefusalReason } from "../../core/pull/bundle.js";

const PSK = "correct horse battery staple";
const fleet = createFleetSigningKey();
const playbook = {
  hosts: "pi1",
  tasks: [
    { name: "wifi", wifi: { ssid: "lab", psk: PSK, country: "DE" } },
    { name: "note", copy: { dest: "/etc/motd", content: `psk is ${PSK}` } },
    { name: "pin", copy: { dest: "/etc/pin", content: 12345678 } },
  ],
};
const later = (ms: number) => new Date(Date.now() + ms);

async function sealed(overrides: Partial<{ device: string; version: number; expires: Date; signingKey: string; recipient: string }> = {}, deviceKey?: { recipient: string }) {
  const key = deviceKey ?? (await pi1);
  return sealBundle(
    { device: overrides.device ?? "pi1", version: overrides.version ?? 3, rollout: "r1", playbook },
    {
      signingKey: overrides.signingKey ?? fleet.privatePem,
      recipient: overrides.recipient ?? key.recipient,
      secrets: [PSK, "12345678"],
      expires: overrides.expires ?? later(60_000),
    },
  );
}
const pi1 = createDeviceKey();

async function refusal(bytes: Uint8Array, opts: Partial<Parameters<typeof openBundle>[1]> = {}): Promise<BundleRefused> {
  const key = await pi1;
  try {
    await openBundle(bytes, { device: "pi1", verifyKey: fleet.publicPem, identity: key.identity, ...opts });
  } catch (error) {
    assert.ok(error instanceof BundleRefused, `expected BundleRefused, got ${error}`);
    assert.ok(!error.message.includes(PSK), "a refusal never shows the secret");
    return error;
  }
  assert.fail("the bundle was accepted");
}
const reason = async (bytes: Uint8Array, opts: Partial<Parameters<typeof openBundle>[1]> = {}): Promise<RefusalReason> => (await refusal(bytes, opts)).reason;

test("a sealed bundle opens on its device with the playbook and secrets as they were", async () => {
  const key = await pi1;
  const opened = await openBundle(await sealed(), { device: "pi1", verifyKey: fleet.publicPem, identity: key.identity, appliedVersion: 2 });
  assert.deepEqual(opened.playbook, playbook);
  assert.equal(opened.version, 3);
  assert.equal(opened.rollout, "r1");
  assert.equal(opened.key, keyId(fleet.publicPem));
});

test("no secret is in the stored bytes, not even as part of a longer string or as a number", async () => {
  const bytes = Buffer.from(await sealed());
  const everything = bytes.toString("utf8") + Buffer.from(JSON.parse(bytes.toString()).payload, "base64").toString("utf8");
  assert.ok(!everything.includes(PSK));
  assert.ok(!everything.includes("psk is"), "the whole string holding the secret is encrypted");
  assert.ok(!everything.includes("12345678"));
  assert.match(everything, /BEGIN AGE ENCRYPTED FILE/);
});

test("secrets are taken out whole, in order, and a reserved key is refused", () => {
  const { playbook: out, values } = extractSecrets({ a: ["x", "the s3cret here"], b: 42, c: { d: "s3cret" } }, ["s3cret", ""]);
  assert.deepEqual(out, { a: ["x", { $secret: 0 }], b: 42, c: { d: { $secret: 1 } } });
  assert.deepEqual(values, ["the s3cret here", "s3cret"]);
  assert.throws(() => extractSecrets({ $secret: 1 }, []), /reserve for encrypted values/);
});

test("unsigned, malformed and tampered bundles are refused", async () => {
  const good = JSON.parse(Buffer.from(await sealed()).toString());
  assert.equal(await reason(Buffer.from(JSON.stringify({ ...good, signature: "" }))), "unsigned");
  assert.equal(await reason(Buffer.from(JSON.stringify({ format: "provision-bundle/1", payload: good.payload }))), "unsigned");
  assert.equal(await reason(Buffer.from("not json")), "malformed");
  assert.equal(await reason(Buffer.from(JSON.stringify({ ...good, format: "other/9" }))), "malformed");
  // change one field of the signed payload: version 3 -> 30
  const payload = JSON.parse(Buffer.from(good.payload, "base64").toString());
  const forged = Buffer.from(JSON.stringify({ ...payload, version: 30 })).toString("base64");
  const r = await refusal(Buffer.from(JSON.stringify({ ...good, payload: forged })));
  assert.equal(r.reason, "tampered");
  assert.match(r.message, /changed after it was signed/);
});

test("a bundle signed by another key is refused, even when it claims this fleet's key id", async () => {
  const other = createFleetSigningKey();
  const foreignKey = await sealed({ signingKey: other.privatePem });
  const r = await refusal(foreignKey);
  assert.equal(r.reason, "unknown-key");
  assert.match(r.message, new RegExp(keyId(other.publicPem)));
  const claimed = { ...JSON.parse(Buffer.from(foreignKey).toString()), key: keyId(fleet.publicPem) };
  assert.equal(await reason(Buffer.from(JSON.stringify(claimed))), "tampered");
});

test("another device's bundle is refused, and could not be decrypted anyway", async () => {
  const pi2 = await createDeviceKey();
  const forPi2 = await sealed({ device: "pi2" }, pi2);
  const r = await refusal(forPi2);
  assert.equal(r.reason, "foreign");
  assert.match(r.message, /for device "pi2", not for this device \("pi1"\)/);
  // pi1's name but pi2's key: the signature is fine, the secrets are not pi1's to read
  assert.equal(await reason(await sealed({}, pi2)), "undecryptable");
});

test("expired, replayed and older bundles are refused", async () => {
  assert.equal(await reason(await sealed(), { now: later(120_000) }), "expired");
  const bytes = await sealed({ version: 5 });
  assert.equal(await reason(bytes, { appliedVersion: 5 }), "replayed");
  const older = await refusal(bytes, { appliedVersion: 9 });
  assert.equal(older.reason, "older");
  assert.match(older.message, /version 5 is older than version 9/);
});

test("sealing refuses what no device could use", async () => {
  await assert.rejects(sealed({ version: 0 }), /positive integer/);
  await assert.rejects(sealed({ device: "pi.1" }), /NATS subject token/);
  await assert.rejects(sealed({ expires: new Date(Date.now() - 1) }), /expiry must be after/);
});
