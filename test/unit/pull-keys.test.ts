import { test } from "node:test";
import assert from "node:assert/strict";
import { createAccount, createOperator, createUser, decode as base64Decode, fromPublic, fromSeed, Prefix } from "@nats-io/nkeys";
import { credentialsAuthenticator, keyPairFromSeed, newKeyPair } from "../../core/pull/keys.js";
import { createAuthority, issueDevice } from "../../core/pull/credentials.js";

const message = new TextEncoder().encode("a server's nonce, or a JWT's header and claims");

test("native key pairs are nkeys' own: the same public and private keys, byte-identical signatures each verifies", () => {
  for (const reference of [createUser(), createAccount(), createOperator()]) {
    const native = keyPairFromSeed(reference.getSeed());
    assert.equal(native.getPublicKey(), reference.getPublicKey());
    assert.deepEqual(native.getPrivateKey(), reference.getPrivateKey());
    assert.deepEqual(native.getSeed(), reference.getSeed());
    assert.deepEqual(native.sign(message), reference.sign(message), "Ed25519 is deterministic: the same signature");
    assert.ok(fromPublic(native.getPublicKey()).verify(message, native.sign(message)));
    assert.ok(native.verify(message, reference.sign(message)));
    assert.ok(!native.verify(new TextEncoder().encode("another message"), reference.sign(message)));
  }
  const made = newKeyPair(Prefix.User);
  assert.match(made.getPublicKey(), /^U[A-Z2-7]{55}$/);
  assert.equal(fromSeed(made.getSeed()).getPublicKey(), made.getPublicKey());
  made.clear();
  assert.throws(() => made.sign(message), /cleared/);
  assert.throws(() => keyPairFromSeed("SUNOTASEED"), /nkeys/);
});

test("a device user issued with them is verified by nkeys; the authenticator signs the nonce with the device's key", async () => {
  const pi = await issueDevice(createAuthority("lab"), "pi1");
  const [header, claims, signature] = pi.jwt.split(".");
  const issuer = JSON.parse(Buffer.from(claims, "base64url").toString()).iss;
  assert.ok(fromPublic(issuer).verify(new TextEncoder().encode(`${header}.${claims}`), new Uint8Array(Buffer.from(signature, "base64url"))), "the JWT's signature");

  const auth = credentialsAuthenticator(pi.creds)("nonce-from-the-server") as { jwt: string; nkey: string; sig: string };
  assert.equal(auth.jwt, pi.jwt);
  assert.equal(auth.nkey, pi.publicKey);
  assert.ok(fromPublic(pi.publicKey).verify(new TextEncoder().encode("nonce-from-the-server"), base64Decode(auth.sig)));
  assert.throws(() => credentialsAuthenticator("not credentials"), /not a NATS credentials file/);
});
