// Secrets never reach diffs, logs or reports.
export const MASK = "********";

// Well-known secret settings, masked even when a module did not declare them.
const SECRET_LINES = /^(\s*(?:wpa-psk|wpa-password|psk|password|wpa_passphrase)\s*[= ]\s*)(.+)$/gim;

export function masker(secrets: string[]): (text: string) => string {
  const values = secrets.filter((s) => s.length >= 1).sort((a, b) => b.length - a.length);
  return (text: string) => {
    let out = text;
    for (const value of values) out = out.split(value).join(MASK);
    return out.replace(SECRET_LINES, (_, key: string) => `${key}${MASK}`);
  };
}
