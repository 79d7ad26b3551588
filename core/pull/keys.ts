// NKeys (NATS's Ed25519 keys) whose curve arithmetic runs in node:crypto (OpenSSL) instead
// of @nats-io/nkeys' pure-JS tweetnacl, which derives the public key again on every call:
// ~8 ms a derivation and ~7 ms a signature here, so a device user JWT cost ~67 ms (five
// derivations and a signature) and 10,000 users ~11 minutes. These are the same seeds, keys
// and (Ed25519 is deterministic) byte-identical signatures; nkeys still encodes and decodes
// them, and the JWT library and the NATS client take them wherever they take a KeyPair.
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { createPair, encode as base64, NKeysError, NKeysErrorCode, Prefix, type KeyPair } from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import type { Authenticator } from "@nats-io/transport-node";

/** RFC 8410's PKCS#8 wrapping of a raw 32-byte Ed25519 seed: how OpenSSL takes one. */
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

class NativeKeyPair implements KeyPair {
  private seed: Uint8Array | undefined;
  private readonly privateKey: KeyObject;
  private readonly publicKey: KeyObject;
  private readonly rawPublic: Uint8Array;
  private readonly publicText: string;

  constructor(seed: Uint8Array) {
    const { prefix, buf } = Codec.decodeSeed(seed);
    this.seed = Uint8Array.from(seed);
    this.privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, buf]), format: "der", type: "pkcs8" });
    this.publicKey = createPublicKey(this.privateKey);
    this.rawPublic = new Uint8Array(this.publicKey.export({ format: "der", type: "spki" }).subarray(-32));
    this.publicText = new TextDecoder().decode(Codec.encode(prefix, this.rawPublic));
  }

  getPublicKey(): string {
    this.live();
    return this.publicText;
  }

  getSeed(): Uint8Array {
    return this.live();
  }

  /** tweetnacl's secret key: the raw seed, then the raw public key. */
  getPrivateKey(): Uint8Array {
    const { buf } = Codec.decodeSeed(this.live());
    return Codec.encode(Prefix.Private, new Uint8Array([...buf, ...this.rawPublic]));
  }

  sign(input: Uint8Array): Uint8Array {
    this.live();
    return new Uint8Array(sign(null, input, this.privateKey));
  }

  verify(input: Uint8Array, signature: Uint8Array): boolean {
    return verify(null, input, this.publicKey, signature);
  }

  clear(): void {
    this.seed?.fill(0);
    this.seed = undefined;
  }

  seal(): Uint8Array {
    throw new NKeysError(NKeysErrorCode.InvalidNKeyOperation);
  }

  open(): Uint8Array | null {
    throw new NKeysError(NKeysErrorCode.InvalidNKeyOperation);
  }

  private live(): Uint8Array {
    if (!this.seed) throw new NKeysError(NKeysErrorCode.ClearedPair);
    return this.seed;
  }
}

/** The key pair of an NKey seed (`SU…`, `SA…`, `SO…`). */
export const keyPairFromSeed = (seed: Uint8Array | string): KeyPair => new NativeKeyPair(typeof seed === "string" ? new TextEncoder().encode(seed) : seed);

/** A new random key pair for `prefix` (nkeys makes the seed; it derives nothing until asked). */
export const newKeyPair = (prefix: Prefix.User | Prefix.Account | Prefix.Operator): KeyPair => keyPairFromSeed(createPair(prefix).getSeed());

const CREDS_BLOCK = /-{3,}[^\n]*-{3,}\n(.+?)\n\s*-{3,}[^\n]*-{3,}/gs;

/**
 * The NATS client's authenticator for a credentials file (the user JWT, then its seed), like
 * the client's own credsAuthenticator but signing the server's nonce with these keys.
 */
/** The user JWT and the NKey seed of a NATS credentials file's text (either may be missing). */
export function credentialsParts(creds: string): { jwt?: string; seed?: string } {
  const [jwt, seed] = [...creds.matchAll(CREDS_BLOCK)].map((m) => m[1].trim());
  return { jwt, seed };
}

export function credentialsAuthenticator(creds: string): Authenticator {
  const { jwt, seed } = credentialsParts(creds);
  if (!jwt || !seed) throw new Error("not a NATS credentials file: it needs a user JWT and a seed");
  const key = keyPairFromSeed(seed);
  return (nonce?: string) => ({ jwt, nkey: key.getPublicKey(), sig: nonce ? base64(key.sign(new TextEncoder().encode(nonce))) : "" });
}
