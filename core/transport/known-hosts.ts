// OpenSSH known_hosts: the host key check ssh2 leaves to us.
import { createHmac } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";

interface Entry {
  patterns: string[];
  keyType: string;
  key: string;
  revoked: boolean;
}

/** Name used for a host in known_hosts: "addr" on port 22, "[addr]:port" otherwise. */
export function knownHostsName(address: string, port: number): string {
  return port === 22 ? address : `[${address}]:${port}`;
}

function parse(file: string): Entry[] {
  if (!existsSync(file)) return [];
  const entries: Entry[] = [];
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let revoked = false;
    if (fields[0].startsWith("@")) {
      if (fields[0] !== "@revoked") continue; // @cert-authority: certificates are not supported
      revoked = true;
      fields.shift();
    }
    if (fields.length < 3) continue;
    entries.push({ patterns: fields[0].split(","), keyType: fields[1], key: fields[2], revoked });
  }
  return entries;
}

function matchesPattern(pattern: string, name: string): boolean {
  if (pattern.startsWith("|1|")) {
    const [, , salt, hash] = pattern.split("|");
    return createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64") === hash;
  }
  const regex = new RegExp(
    "^" +
      pattern
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*/g, ".*")
        .replace(/\?/g, ".") +
      "$",
  );
  return regex.test(name);
}

function entriesFor(entries: Entry[], name: string): Entry[] {
  return entries.filter((e) => {
    const negated = e.patterns.some((p) => p.startsWith("!") && matchesPattern(p.slice(1), name));
    return !negated && e.patterns.some((p) => !p.startsWith("!") && matchesPattern(p, name));
  });
}

/** The wire name of the key type inside an SSH public key blob. */
export function keyTypeOf(blob: Buffer): string {
  const length = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + length).toString("ascii");
}

const signatureAlgorithms: Record<string, string[]> = {
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
};

export type HostKeyPolicy = { file: string; acceptNew: boolean };

/**
 * Builds ssh2's hostVerifier for one host. `rejection()` explains a refusal,
 * since ssh2 itself only reports a generic handshake failure.
 */
export function hostKeyVerifier(policy: HostKeyPolicy, address: string, port: number, knownAs = address) {
  const name = knownHostsName(address, port);
  const entries = parse(policy.file);
  const known = [...entriesFor(entries, name), ...(knownAs !== address ? entriesFor(entries, knownHostsName(knownAs, port)) : [])];
  let rejection: string | undefined;
  const verify = (blob: Buffer): boolean => {
    const key = blob.toString("base64");
    const type = keyTypeOf(blob);
    if (known.some((e) => e.revoked && e.key === key)) {
      rejection = `host key of ${name} is marked @revoked in ${policy.file}`;
      return false;
    }
    if (known.some((e) => !e.revoked && e.key === key)) return true;
    if (known.some((e) => !e.revoked)) {
      rejection =
        `HOST KEY MISMATCH for ${name}: the ${type} key it offered is not the one in ${policy.file}. ` +
        `If the host was reinstalled, remove its old line (ssh-keygen -R '${name}' -f ${policy.file}); otherwise suspect an attack`;
      return false;
    }
    if (!policy.acceptNew) {
      rejection = `unknown host key for ${name} (not in ${policy.file}). Add it (ssh-keyscan -p ${port} ${address} >> ${policy.file}) or run with --accept-new-host-keys`;
      return false;
    }
    mkdirSync(dirname(policy.file), { recursive: true });
    appendFileSync(policy.file, `${name} ${type} ${key}\n`, { mode: 0o600 });
    return true;
  };
  const types = [...new Set(known.filter((e) => !e.revoked).flatMap((e) => signatureAlgorithms[e.keyType] ?? [e.keyType]))];
  return { verify, rejection: () => rejection, serverHostKeyAlgorithms: types.length ? types : undefined };
}
