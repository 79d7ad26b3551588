// Remote commands are argv arrays; this is the one place they become shell text.

/** Quote one word for a POSIX shell: 'it'\''s' style, safe for any byte string. */
export function quote(word: string): string {
  if (word === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(argv: readonly string[]): string {
  if (!argv.length) throw new Error("empty command");
  return argv.map(quote).join(" ");
}

/** argv that runs a constant script with values passed as positional parameters ($1…). */
export function script(body: string, ...args: string[]): string[] {
  return ["sh", "-c", body, "provision", ...args];
}
