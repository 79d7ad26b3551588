// "{{ var }}" templating. An undefined variable is an error, never an empty string.

const EXPRESSION = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}/g;
const WHOLE = /^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}$/;

export class UndefinedVariable extends Error {
  constructor(readonly variable: string, readonly path: (string | number)[]) {
    super(`undefined variable "${variable}"`);
  }
}

function lookup(vars: Record<string, unknown>, name: string, path: (string | number)[]): unknown {
  let value: unknown = vars;
  for (const part of name.split(".")) {
    if (value === null || typeof value !== "object" || !(part in (value as object))) throw new UndefinedVariable(name, path);
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** Render every string in `value`; a string that is exactly "{{ x }}" keeps x's type. */
export function render(value: unknown, vars: Record<string, unknown>, path: (string | number)[] = []): unknown {
  if (typeof value === "string") {
    const whole = WHOLE.exec(value);
    if (whole) return lookup(vars, whole[1], path);
    return value.replace(EXPRESSION, (_, name: string) => {
      const v = lookup(vars, name, path);
      return typeof v === "object" ? JSON.stringify(v) : String(v);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => render(v, vars, [...path, i]));
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v, vars, [...path, k])]));
  return value;
}
