// "{{ var }}" templating. An undefined variable is an error, never an empty string;
// syntax this templater does not support is an error, never left as literal text.
import { quote } from "../errors.js";

type TemplatePath = (string | number)[];

const NAME = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$/;
/** Jinja statements and comments: not supported, and not to be passed on as text. */
const STATEMENT = /\{%[\s\S]*?%\}|\{#[\s\S]*?#\}/;

export class TemplateError extends Error {
  constructor(
    message: string,
    readonly path: TemplatePath,
    readonly inKey = false,
  ) {
    super(message);
  }
}

export class UndefinedVariable extends TemplateError {
  constructor(
    readonly variable: string,
    path: TemplatePath,
  ) {
    super(`undefined variable ${quote(variable)}`, path);
  }
}

export const SUPPORTED = "only {{ name }} and {{ a.b }} are supported";

export class UnsupportedTemplate extends TemplateError {}

function unsupported(snippet: string, path: TemplatePath, why: string, inKey = false): UnsupportedTemplate {
  return new UnsupportedTemplate(`unsupported template syntax ${quote(snippet)}${why ? ` (${why})` : ""}: ${SUPPORTED}`, path, inKey);
}

function why(inner: string): string {
  if (!inner) return "an empty expression";
  if (inner.includes("|")) return "filters are not supported";
  if (inner.includes("{{")) return 'a "{{" without its "}}"';
  if (/[()]/.test(inner)) return "calls are not supported";
  if (/['"]/.test(inner)) return "literals are not supported";
  if (/[-+*/%<>=!~]/.test(inner) || /\s(and|or|not|if|else|in|is)\s/.test(` ${inner} `)) return "expressions are not supported";
  if (/\[/.test(inner)) return 'write a.b, not a["b"]';
  return "";
}

/** A string split into literal text and {{ name }} references; anything else is an error. */
function parse(text: string, path: TemplatePath, inKey = false): (string | { name: string })[] {
  const statement = STATEMENT.exec(text);
  if (statement) throw unsupported(statement[0], path, "statements and comments are not supported", inKey);
  const parts: (string | { name: string })[] = [];
  let from = 0;
  for (let open = text.indexOf("{{"); open !== -1; open = text.indexOf("{{", from)) {
    if (open > from) parts.push(text.slice(from, open));
    const close = text.indexOf("}}", open + 2);
    if (close === -1) throw unsupported(text.slice(open), path, 'a "{{" without its "}}"', inKey);
    const inner = text.slice(open + 2, close).trim();
    if (!NAME.test(inner)) throw unsupported(text.slice(open, close + 2), path, why(inner), inKey);
    parts.push({ name: inner });
    from = close + 2;
  }
  if (from < text.length) parts.push(text.slice(from));
  return parts;
}

/** Own properties only: {{ constructor }} or {{ __proto__ }} is an undefined variable, not a JavaScript built-in. */
function lookup(vars: Record<string, unknown>, name: string, path: TemplatePath): unknown {
  let value: unknown = vars;
  for (const part of name.split(".")) {
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, part)) throw new UndefinedVariable(name, path);
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** Throws TemplateError for syntax the templater does not support (no variables needed: checked once per task). */
export function checkTemplates(value: unknown, path: TemplatePath = []): void {
  if (typeof value === "string") parse(value, path);
  else if (Array.isArray(value)) value.forEach((v, i) => checkTemplates(v, [...path, i]));
  else if (value && typeof value === "object")
    for (const [k, v] of Object.entries(value)) {
      if (k.includes("{{") || STATEMENT.test(k)) throw unsupported(k, [...path, k], "templates in keys are not supported", true);
      checkTemplates(v, [...path, k]);
    }
}

/**
 * Taint tracking: `isSecret` says whether a variable (by name and value) is secret; every
 * rendered value that refers to one is secret too, and its path is added to `paths`.
 */
export interface Taint {
  isSecret(name: string, value: unknown): boolean;
  paths: TemplatePath[];
}

/** Render every string in `value`; a string that is exactly "{{ x }}" keeps x's type. */
export function render(value: unknown, vars: Record<string, unknown>, path: TemplatePath = [], taint?: Taint): unknown {
  if (typeof value === "string") {
    const parts = parse(value, path);
    let secret = false;
    const resolve = (name: string) => {
      const v = lookup(vars, name, path);
      if (taint?.isSecret(name, v)) secret = true;
      return v;
    };
    const rendered =
      parts.length === 1 && typeof parts[0] === "object"
        ? resolve(parts[0].name)
        : parts
            .map((part) => {
              if (typeof part === "string") return part;
              const v = resolve(part.name);
              return typeof v === "object" ? JSON.stringify(v) : String(v);
            })
            .join("");
    if (secret) taint!.paths.push(path);
    return rendered;
  }
  if (Array.isArray(value)) return value.map((v, i) => render(v, vars, [...path, i], taint));
  if (value && typeof value === "object")
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => {
        if (k.includes("{{") || STATEMENT.test(k)) throw unsupported(k, [...path, k], "templates in keys are not supported", true);
        return [k, render(v, vars, [...path, k], taint)];
      }),
    );
  return value;
}
