// systemd's own rules where provision names units and reads systemd's files: unit-name
// escaping (systemd-escape, unit_name_escape in src/basic/unit-name.c).

/**
 * A string as `systemd-escape STRING` escapes it for a unit name or instance: `/` becomes
 * `-`; ASCII letters, digits, `:`, `_` and `.` (not leading) stay; every other byte,
 * `-` and `\` included, becomes `\xhh`. `wpa_supplicant@wl\x2d0.service` runs for wl-0
 * (%I unescapes), where `wpa_supplicant@wl-0.service` would run for "wl/0".
 */
export function systemdEscape(value: string): string {
  let out = "";
  const bytes = Buffer.from(value, "utf8");
  bytes.forEach((byte, i) => {
    const c = String.fromCharCode(byte);
    if (c === "/") out += "-";
    else if (/[A-Za-z0-9:_]/.test(c) || (c === "." && i > 0)) out += c;
    else out += `\\x${byte.toString(16).padStart(2, "0")}`;
  });
  return out;
}

/** The unit name of template `name@.suffix` for `instance`: `systemd-escape --template=name@.suffix INSTANCE`. */
export function templateUnit(template: string, instance: string): string {
  const at = template.indexOf("@.");
  return `${template.slice(0, at + 1)}${systemdEscape(instance)}${template.slice(at + 1)}`;
}
