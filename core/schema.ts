// One ajv instance for every schema: inventory, playbook, and each module's args.
import { Ajv, type ValidateFunction } from "ajv";

// Checking a schema against JSON Schema's meta-schema costs ~15 ms on a run's first compile:
// only schemas from outside (plugins) are checked; the built-in ones are checked by the tests.
export const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true, allowUnionTypes: true, validateSchema: false });

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
