// One ajv instance for every schema: inventory, playbook, and each module's args.
import { isIP } from "node:net";
import { Ajv, type ValidateFunction } from "ajv";

// Checking a schema against JSON Schema's meta-schema costs ~15 ms on a run's first compile:
// only schemas from outside (plugins) are checked; the built-in ones are checked by the tests.
export const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true, allowUnionTypes: true, validateSchema: false });

const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** A DNS name (labels of letters, digits, "-" and "_"), not something that only looks like an IPv4 address. */
export function isHostName(text: string): boolean {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  return name.length > 0 && name.length <= 253 && !/^[\d.]+$/.test(name) && name.split(".").every((l) => LABEL.test(l));
}

/** What `address` may be: a host name, an IPv4 or an IPv6 address. */
export function isHostAddress(text: string): boolean {
  return isIP(text) !== 0 || isHostName(text);
}

/** Inventory host and group names: what patterns (--limit, hosts:) can name; no ":", ",", "!", "&", "@", "*", spaces. */
export function isInventoryName(text: string): boolean {
  return text.length > 0 && text.length <= 253 && text.split(".").every((l) => LABEL.test(l));
}

/** Formats of our own, with how an error describes them and the fix. */
export const FORMATS: Record<string, { is: string; fix: string; validate: (s: string) => boolean }> = {
  "host-address": {
    is: "a host name, an IPv4 or an IPv6 address",
    fix: "Write e.g. pi1.local, 192.168.1.20 or fd00::20.",
    validate: isHostAddress,
  },
  "inventory-name": {
    is: "a name of letters, digits, '_', '-' and '.'",
    fix: "Rename it (patterns use ':', ',', '!', '&', '@' and '*'; set address: for the host's real address).",
    validate: isInventoryName,
  },
  "single-line": {
    is: "one line of text without control characters",
    fix: "Remove the line breaks and control characters.",
    validate: (s) => s.length > 0 && !/[\0-\x1f\x7f]/.test(s),
  },
};
for (const [name, format] of Object.entries(FORMATS)) ajv.addFormat(name, { type: "string", validate: format.validate });

const cache = new WeakMap<object, ValidateFunction>();

export function compile(schema: object, opts: { checkSchema?: boolean } = {}): ValidateFunction {
  let validate = cache.get(schema);
  if (!validate) {
    if (opts.checkSchema && !ajv.validateSchema(schema)) throw new Error(ajv.errorsText(ajv.errors, { dataVar: "schema" }));
    validate = ajv.compile(schema);
    cache.set(schema, validate);
  }
  return validate;
}
