// Secrets never reach diffs, logs or reports.
export const MASK = "********";

// Well-known secret settings, masked even when a module did not declare them: ifupdown's
// wpa-*, wpa_supplicant.conf(5) (psk, the "#psk=" comment wpa_passphrase writes,
// sae_password, password, private_key_passwd, wep_key0..3), hostapd's wpa_passphrase and
// NetworkManager keyfiles (psk, password, wep-key0..3).
const SECRET_LINES = /^(\s*#?\s*(?:wpa-psk|wpa-password|psk|password|sae_password|private_key_passwd|private_key2_passwd|wep_key[0-3]|wep-key[0-3]|wpa_passphrase)\s*[= ]\s*)(.+)$/gim;

export function masker(secrets: string[]): (text: string) => string {
  const values = secrets.filter((s) => s.length >= 1).sort((a, b) => b.length - a.length);
  return (text: string) => {
    let out = text;
    for (const value of values) out = out.split(value).join(MASK);
    return out.replace(SECRET_LINES, (_, key: string) => `${key}${MASK}`);
  };
}
