// Encrypt variables of a test inventory at rest, as a user keeps them: each named variable
// becomes an !age value for a new key written beside the inventory (0600), which the
// inventory names as age_identity_file. For tests that run a seed with an encrypted PSK.
import { readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { isScalar, parseDocument, visit } from "yaml";
import { ENCRYPT_TAG, newIdentity, seal } from "../../core/config/vault.js";

export async function encryptInventoryVars(file: string, names: string[]): Promise<void> {
  const doc = parseDocument(readFileSync(file, "utf8"));
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && names.includes(String(pair.key.value)) && isScalar(pair.value)) {
        pair.value.value = String(pair.value.value);
        pair.value.tag = ENCRYPT_TAG;
      }
    },
  });
  const { text, recipient } = await newIdentity();
  const keyFile = `${basename(file)}.age.key`;
  writeFileSync(join(dirname(file), keyFile), text, { mode: 0o600 });
  doc.setIn(["all", "vars", "age_identity_file"], keyFile);
  writeFileSync(file, await seal(doc.toString(), file, [recipient], new Map()));
}
