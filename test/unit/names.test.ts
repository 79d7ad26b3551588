// Names and strings read or written by another program's rules: systemd's unit-name
// escaping (checked against the real systemd-escape) and iw's SSID escapes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { systemdEscape, templateUnit } from "../../modules/network/systemd.js";
import { iwLinkSsid, unescapeIw } from "../../modules/network/wifi.js";
import { wifiProblems } from "../../modules/bond/index.js";

const NAMES = ["wlan0", "wl-0", "wl_0", "a.b", ".dot", "-lead", "a/b", "/", "sp ace", "back\\slash", "x:y", "ü-ß", "tab\tx", "a@b", "100%", "wl0.5", "end."];

test("systemd-escape's rules: the same escapes as the real systemd-escape on this machine", (t) => {
  const binary = ["/usr/bin/systemd-escape", "/bin/systemd-escape"].find(existsSync);
  if (!binary) return t.skip("systemd-escape is not installed here");
  for (const name of NAMES) assert.equal(systemdEscape(name), execFileSync(binary, ["--", name], { encoding: "utf8" }).trim(), JSON.stringify(name));
  assert.equal(templateUnit("wpa_supplicant@.service", "wl-0"), execFileSync(binary, ["--template=wpa_supplicant@.service", "--", "wl-0"], { encoding: "utf8" }).trim());
});

test("systemd-escape's rules, without the binary: a Wi-Fi slave named wl-0 gets wpa_supplicant@wl\\x2d0.service", () => {
  assert.equal(templateUnit("wpa_supplicant@.service", "wl-0"), "wpa_supplicant@wl\\x2d0.service");
  assert.equal(systemdEscape("wlan0"), "wlan0");
  assert.equal(systemdEscape(".a/b-c"), "\\x2ea-b\\x2dc");
});

/** iw's print_ssid_escaped (iw util.c), the writer the reader must undo. */
function iwEscape(ssid: string): string {
  const bytes = Buffer.from(ssid, "utf8");
  return [...bytes]
    .map((b, i) => {
      const c = String.fromCharCode(b);
      if (b >= 0x21 && b <= 0x7e && c !== "\\") return c;
      if (c === " " && i !== 0 && i !== bytes.length - 1) return " ";
      return `\\x${b.toString(16).padStart(2, "0")}`;
    })
    .join("");
}

test("iw's escaped SSIDs are read back as the SSID: a backslash, leading and trailing spaces, unprintable bytes", () => {
  for (const ssid of ["home", " lead", "trail ", " both ", "in side", "back\\slash", "\\x41 literal", "tab\there", "ünï", "semi;colon", "  ", "\\"]) {
    const printed = iwEscape(ssid);
    assert.equal(unescapeIw(printed), ssid, `${JSON.stringify(ssid)} printed as ${printed}`);
    assert.equal(iwLinkSsid(`Connected to 02:00:00:00:01:00 (on wlan0)\n\tSSID: ${printed}\n\tfreq: 2412\n`), ssid);
  }
  assert.equal(iwEscape(" a\\b "), "\\x20a\\x5cb\\x20", "the escapes named in iw's source");
  assert.equal(iwLinkSsid("Not connected.\n"), undefined);
});

test("verification accepts a station associated to an SSID iw prints escaped, and names a different one in words", () => {
  const authorized = "--- station dump\nStation 02:00:00:00:01:00 (on wlan0)\n\tauthorized:\tyes\n";
  const link = (printed: string) => `Connected to 02:00:00:00:01:00 (on wlan0)\n\tSSID: ${printed}\n${authorized}`;
  assert.deepEqual(wifiProblems("wlan0", " my\\net", link("\\x20my\\x5cnet")), []);
  assert.deepEqual(wifiProblems("wlan0", "my net", link("my\\x20net")), [], "an escape iw would not need still reads right");
  assert.deepEqual(wifiProblems("wlan0", "home", link("\\x20home")), ['wlan0 not associated to SSID "home" (associated to " home")']);
});
