// NetworkManager keyfiles read back as NetworkManager reads them: GLib's key-file syntax
// checked against GLib itself (python3-gi), then NetworkManager's rules (types, defaults,
// aliases, SSIDs), and edits that change only the keys whose meaning differs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createTwoFilesPatch } from "diff";
import { escapeList, escapeString, parseBoolean, parseDocument, rawValues, unescapeList, unescapeString, writeDocument } from "../../modules/network/gkeyfile.js";
import { parseKeyfile, readProfile, reconcileKeyfile, renderKeyfile, sameMeaning, withKey, type Keyfile } from "../../modules/network/keyfile.js";
import { bondProfile, portProfile } from "../../modules/bond/networkmanager.js";
import type { BondArgs } from "../../modules/bond/model.js";
import { repoRoot } from "../support/cache.js";

type GlibValue = { string: string | null; list: string[] | null; boolean: boolean | null };
type GlibAnswer = { load: (Record<string, Record<string, GlibValue>> | { error: string })[]; set_string: string[]; set_list: string[] };

/** Ask GLib (python3-gi, installed by test/setup.sh). */
function glib(request: { load?: string[]; set_string?: string[]; set_list?: string[][] }): GlibAnswer {
  const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const out = execFileSync(python, [join(repoRoot, "test", "support", "glib-keyfile.py")], { input: JSON.stringify(request), encoding: "utf8" });
  return JSON.parse(out) as GlibAnswer;
}

const TRICKY_VALUES = [
  "plain",
  " leading space",
  "  two leading",
  "\tleading tab",
  " \t mixed lead",
  "trailing space ",
  "trailing tab\t",
  "in ner  spaces",
  "back\\slash",
  "\\",
  "\\\\",
  "new\nline",
  "car\rriage",
  "semi;colon",
  ";",
  "a;b;",
  "\\;",
  "tab\tinside",
  "ünïcödé ✓",
  "",
  "=",
  "a=b",
  "#not a comment",
  "[not a group]",
  "\\s literal",
  " ",
];

test("GKeyFile: values are escaped exactly as GLib's g_key_file_set_string and set_string_list write them", () => {
  const lists = [["a", "b"], ["semi;colon", " lead"], ["back\\slash;"], [""], [], ["x y", "tab\tz"]];
  const answer = glib({ set_string: TRICKY_VALUES, set_list: lists });
  assert.deepEqual(
    TRICKY_VALUES.map((v) => escapeString(v)),
    answer.set_string,
  );
  assert.deepEqual(lists.map(escapeList), answer.set_list);
});

test("GKeyFile: documents are read exactly as GLib reads them (escapes, lists, booleans, comments, duplicates, bad lines)", () => {
  const values = TRICKY_VALUES.map((v) => escapeString(v));
  const documents = [
    `[a]\n${values.map((v, i) => `k${i}=${v}`).join("\n")}\n`,
    "# comment\n[a]\nx=1\n  # indented comment\n\n[b]\nx=2\n[a]\ny=3\nx=4\n", // a group twice merges, the last x wins
    "[a]\r\nx=crlf\r\n",
    "[a]\n  x  =  padded value  \n",
    "[a]\nx=\\e bad escape\ny=end\\\n",
    "[a]\nx=a\\;b\ny=a\\\\;b\n",
    "[a]\nl=one;two\\;three;;four\nm=\\sx;y;\n",
    "[a]\nb1=true\nb2=1\nb3=yes\nb4= false \nb5=False\nb6=0\n",
    "x=1\n[a]\n",
    "[a]\nnot a pair\n",
    "[a]\n=value\n",
    "[]\n",
    "[a b]\nk y=v\n",
    "[a]\n[b=1\n",
    "[a]] \n",
    "[a] \nk=v\n",
    "[a]\nk[de]=v\n",
    ";semicolon comment?\n[a]\n",
    "[a]\n\u000bk=v\n",
  ];
  const answer = glib({ load: documents });
  documents.forEach((doc, i) => {
    const want = answer.load[i];
    let mine: unknown;
    try {
      const raw = rawValues(parseDocument(doc));
      mine = Object.fromEntries(
        [...raw].map(([g, keys]) => [
          g,
          Object.fromEntries(
            [...keys]
              .filter(([k]) => !/\[/.test(k))
              .map(([k, v]) => [
                k,
                {
                  string: unescapeString(v),
                  list: unescapeList(v),
                  boolean: parseBoolean(v),
                },
              ]),
          ),
        ]),
      );
    } catch (error) {
      mine = { error: (error as Error).message };
    }
    if ("error" in want)
      assert.ok(mine && typeof mine === "object" && "error" in mine, `GLib refuses ${JSON.stringify(doc)} (${want.error}); so must we, got ${JSON.stringify(mine)}`);
    else {
      assert.deepEqual(mine, want, `document ${JSON.stringify(doc)}`);
    }
  });
});

test("GKeyFile: a document is written back byte for byte", () => {
  for (const text of ["# c\n[a]\nx=1\n\n[b]\n", "[a]\r\nx=1\r\n", "[a]\nx=1", "", "  [a]  \n  k = v \n"]) assert.equal(writeDocument(parseDocument(text)), text);
});

// ---- NetworkManager's meaning --------------------------------------------------------------

const ARGS = {
  name: "bond0",
  stack: "auto",
  mode: "active-backup",
  slaves: ["eth0", "wlan0"],
  primary: "eth0",
  primary_reselect: "always",
  fail_over_mac: "active",
  miimon: 100,
  updelay: 200,
  downdelay: 0,
  method: "static",
  address: "10.77.0.11/24",
  gateway: "10.77.0.1",
  slave_options: { wlan0: { ssid: "provision-lab", psk: "lab-passphrase-123", country: "DE" } },
  path: "/etc/network/interfaces",
  backup_path: "/x",
} as unknown as BondArgs;

/**
 * What NetworkManager 1.42.4 wrote back (captured in the rpios-bookworm lab guest) after
 * `nmcli connection modify bond0 ipv4.dns 9.9.9.9` and `-ipv4.dns 9.9.9.9`, and after
 * setting and resetting a port's autoconnect-priority: defaults dropped (autoconnect=true),
 * timestamp added, empty [proxy] and [bond-port] added, its own key order.
 */
function rewrittenByNm(profile: Keyfile): string {
  const c = profile.connection;
  if (c.type === "bond")
    return (
      `[connection]\nid=bond0\nuuid=${c.uuid}\ntype=bond\nautoconnect-slaves=1\ninterface-name=bond0\ntimestamp=1796461762\n\n` +
      "[bond]\ndowndelay=0\nfail_over_mac=active\nmiimon=100\nmode=active-backup\nprimary=eth0\nprimary_reselect=always\nupdelay=200\n\n" +
      "[ipv4]\naddress1=10.77.0.11/24,10.77.0.1\nmethod=manual\n\n[ipv6]\nmethod=disabled\n\n[proxy]\n"
    );
  if (c.type === "wifi")
    return (
      `[connection]\nid=bond0-port-wlan0\nuuid=${c.uuid}\ntype=wifi\ninterface-name=wlan0\nmaster=bond0\nslave-type=bond\ntimestamp=1796461767\n\n` +
      "[wifi]\nmode=infrastructure\npowersave=2\nssid=provision-lab\n\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=lab-passphrase-123\n\n[bond-port]\n"
    );
  return `[connection]\nid=bond0-port-eth0\nuuid=${c.uuid}\ntype=ethernet\ninterface-name=eth0\nmaster=bond0\nslave-type=bond\ntimestamp=1796461762\n\n[ethernet]\n\n[bond-port]\n`;
}

test("NetworkManager's own rewrite of a profile (defaults dropped, timestamp, [proxy], key order) means the same: no edit", () => {
  const wifiArgs = { ...ARGS, slave_options: { wlan0: { ...ARGS.slave_options!.wlan0, wireless_power: "off" } } } as BondArgs;
  for (const desired of [bondProfile(ARGS), portProfile(ARGS, "eth0"), portProfile(wifiArgs, "wlan0")]) {
    const nm = rewrittenByNm(desired);
    assert.notEqual(nm, renderKeyfile(desired));
    assert.ok(sameMeaning(nm, renderKeyfile(desired)), nm);
    assert.equal(reconcileKeyfile(nm, desired), nm, "nothing to write");
  }
});

test("a profile that differs in one key is edited in that key only: the diff is one line", () => {
  const desired = bondProfile(ARGS);
  const nm = rewrittenByNm(desired);
  const withDns = nm.replace("method=manual\n", "dns=9.9.9.9;\nmethod=manual\n");
  const fixed = reconcileKeyfile(withDns, desired);
  assert.equal(fixed, nm, "the extra dns line goes, every other byte stays");
  const patch = createTwoFilesPatch("a", "b", withDns, fixed);
  assert.deepEqual(
    patch.split("\n").filter((l) => /^[-+][^-+]/.test(l)),
    ["-dns=9.9.9.9;"],
  );

  const otherPrimary = nm.replace("primary=eth0", "primary=wlan0");
  assert.equal(reconcileKeyfile(otherPrimary, desired), nm);
  const noMiimon = nm.replace("updelay=200\n", "");
  assert.equal(
    reconcileKeyfile(noMiimon, desired),
    nm.replace("updelay=200\n", "").replace("primary_reselect=always\n", "primary_reselect=always\nupdelay=200\n"),
    "a missing key is added at the end of its group",
  );
  const otherGateway = nm.replace(",10.77.0.1", ",10.77.0.254");
  assert.equal(reconcileKeyfile(otherGateway, desired), nm, "the gateway inside address1 is rewritten there");
  const noIpv4 = nm.replace(/\[ipv4\][^[]*/, "");
  const added = reconcileKeyfile(noIpv4, desired);
  assert.ok(sameMeaning(added, renderKeyfile(desired)), added);
  assert.match(added, /\n\[ipv4\]\naddress1=10\.77\.0\.11\/24,10\.77\.0\.1\nmethod=manual\n$/, "a missing group is added at the end");
});

test("types per key: booleans only where NetworkManager has one, strings exact, integers and enums by value", () => {
  const wifi = (ssid: string, psk: string) => `[connection]\nid=w\ntype=wifi\n[wifi]\nssid=${ssid}\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=${psk}\n`;
  assert.ok(!sameMeaning(wifi("yes", "secret-123"), wifi("true", "secret-123")), "an SSID yes is not an SSID true");
  assert.ok(!sameMeaning(wifi("home", "secret-123"), wifi("home", "secret-123 ")), "a trailing space is part of a PSK");
  assert.ok(!sameMeaning(wifi("home", "secret-123"), wifi("Home", "secret-123")));
  assert.ok(sameMeaning(wifi("home", "x"), wifi("104;111;109;101;", "x")), "an SSID given as bytes");
  const c = (line: string) => `[connection]\nid=a\n${line}\n`;
  assert.ok(sameMeaning(c("autoconnect=1"), c("autoconnect=true")));
  assert.ok(sameMeaning(c("autoconnect=true"), c("")), "autoconnect is true by default");
  assert.ok(!sameMeaning(c("autoconnect=false"), c("")));
  assert.ok(sameMeaning(c("autoconnect=no"), c("")), "GLib refuses 'no' as a boolean: NetworkManager keeps the default (true)");
  assert.ok(sameMeaning(c("autoconnect-priority=0"), c("")), "priority 0 is the default");
  assert.ok(!sameMeaning(c("autoconnect-priority=5"), c("")));
  assert.ok(sameMeaning(c("autoconnect-slaves=1"), c("autoconnect-ports=1")), "1.52's name for it");
  assert.ok(sameMeaning(c("master=bond0\nslave-type=bond"), c("controller=bond0\nport-type=bond")));
  assert.ok(sameMeaning(c("timestamp=1"), c("timestamp=2")), "timestamp is state, not configuration");
  assert.ok(sameMeaning("[bond]\nmode=1\n", "[bond]\nmode=active-backup\n"));
  assert.ok(sameMeaning("[bond]\nmiimon=100\n", "[bond]\n"), "NetworkManager's bond default is miimon 100");
  assert.ok(!sameMeaning("[bond]\nprimary=eth0\n", "[bond]\nprimary=eth0 \n"));
  assert.ok(sameMeaning("[ipv4]\nmethod=auto\n\n[proxy]\n", ""), "empty groups and defaults mean nothing");
  assert.ok(sameMeaning("[ipv4]\ndns=1.1.1.1;9.9.9.9;\n", "[ipv4]\ndns=1.1.1.1;9.9.9.9\n"), "the last list separator is optional");
  assert.ok(!sameMeaning("[ipv4]\ndns=1.1.1.1;9.9.9.9;\n", "[ipv4]\ndns=9.9.9.9;1.1.1.1;\n"), "order of DNS servers matters");
  assert.ok(sameMeaning("[ipv4]\naddress1=10.0.0.2/24,10.0.0.1\n", "[ipv4]\naddress1=10.0.0.2/24\ngateway=10.0.0.1\n"));
  assert.ok(sameMeaning("[ipv4]\naddress1=10.0.0.2\n", "[ipv4]\naddress1=10.0.0.2/24\n"), "no prefix: NetworkManager assumes /24");
  assert.ok(sameMeaning("[802-3-ethernet]\nmtu=1500\n[connection]\nid=a\n", "[connection]\nid=a\n\n[ethernet]\nmtu=1500\n"));
  assert.ok(sameMeaning("[ethernet]\nmac-address=aa:bb:cc:dd:ee:ff\n", "[ethernet]\nmac-address=AA:BB:CC:DD:EE:FF\n"));
  assert.ok(!sameMeaning("[connection]\nid=a\n[x\n", "[connection]\nid=a\n"), "a file GLib refuses means nothing");
});

test("an SSID is written the way NetworkManager's writer does: a ';' escaped so it is not read as a list of bytes", () => {
  for (const ssid of ["home", "a;b", "104;111;109;101;", "1;2;", " lead", "back\\slash", "semi;", ";"]) {
    const text = renderKeyfile({ wifi: { ssid } });
    const answer = glib({ load: [text] }).load[0] as Record<string, Record<string, GlibValue>>;
    const glibString = answer.wifi.ssid.string!;
    // nm-keyfile's reader: a list of byte values, else the string with \; unescaped
    const nmReads = /^\s*\d{1,3}\s*;(\s*\d{1,3}\s*;)*\s*$/.test(glibString) ? "bytes" : glibString.replace(/\\;/g, ";");
    assert.equal(nmReads, ssid, `${JSON.stringify(ssid)} written as ${text.trim()}`);
    assert.equal(readProfile(text)!.get("wifi", "ssid"), ssid);
  }
  assert.equal(renderKeyfile({ wifi: { ssid: "a;b" } }), "[wifi]\nssid=a\\\\;b\n");
});

test("the port profiles round-trip: rendered, read back by GLib, the same meaning as what provision meant", () => {
  const port = portProfile({ ...ARGS, slave_options: { wlan0: { ssid: " odd;ssid\\", psk: "pass phrase " } } } as unknown as BondArgs, "wlan0");
  const text = renderKeyfile(port);
  const answer = glib({ load: [text] }).load[0] as Record<string, Record<string, GlibValue>>;
  assert.equal(answer["wifi-security"].psk.string, "pass phrase ", "the PSK's trailing space survives");
  assert.equal(answer.wifi.ssid.string, " odd\\;ssid\\");
  assert.equal(readProfile(text)!.get("wifi", "ssid"), " odd;ssid\\");
  assert.equal(parseKeyfile(text).connection.master, "bond0");
});

test("withKey sets one key (the last of duplicates, under an alias group too) and keeps every other byte", () => {
  const original = "# comment\n[connection]\nid=eth0\nautoconnect=true\n\n[ipv4]\nmethod=auto\n";
  assert.equal(withKey(original, "connection", "autoconnect", "false"), original.replace("autoconnect=true", "autoconnect=false"));
  assert.equal(withKey("[connection]\nid=a\n\n[ipv4]\nmethod=auto\n", "connection", "autoconnect", "false"), "[connection]\nid=a\nautoconnect=false\n\n[ipv4]\nmethod=auto\n");
  assert.equal(
    withKey("[connection]\nautoconnect=true\nid=a\nautoconnect=true\n", "connection", "autoconnect", "false"),
    "[connection]\nautoconnect=true\nid=a\nautoconnect=false\n",
  );
  assert.equal(withKey("[802-11-wireless]\nssid=x\n", "wifi", "hidden", "true"), "[802-11-wireless]\nssid=x\nhidden=true\n");
  assert.equal(withKey("[ipv4]\nmethod=auto\n", "connection", "autoconnect", "false"), "[ipv4]\nmethod=auto\n\n[connection]\nautoconnect=false\n");
});

test("secrets of NetworkManager profiles are masked in diffs though no module declared them: Wi-Fi, 802-1x, WireGuard, VPN", async () => {
  const { masker, MASK } = await import("../../core/config/secrets.js");
  const secrets = {
    psk: "p5k-value",
    "wep-key0": "wep0-value",
    "wep-key3": "wep3-value",
    "leap-password": "leap-value",
    password: "eap-pass-value",
    "password-raw": "1;2;3;",
    "private-key-password": "pk-pass-value",
    "phase2-private-key-password": "p2-pk-pass-value",
    "client-cert-password": "cc-pass-value",
    pin: "1234-pin",
    "preshared-key": "wg-psk-value",
    "mka-cak": "cak-value",
  };
  const profile =
    `[connection]\nid=corp\ntype=wifi\n\n[wifi-security]\nkey-mgmt=wpa-eap\npsk-flags=0\n\n[802-1x]\neap=peap;\nidentity=alice\n` +
    Object.entries(secrets)
      .map(([k, v]) => `${k}=${v}`)
      .join("\n") +
    "\npassword-flags=0\n\n[vpn-secrets]\ntoken=vpn-token-value\n  password = vpn-pass-value\n\n[ipv4]\nmethod=auto\n";
  const shown = masker([])(profile);
  for (const value of [...Object.values(secrets), "vpn-token-value", "vpn-pass-value"]) assert.ok(!shown.includes(value), `${value} is masked:\n${shown}`);
  for (const kept of ["identity=alice", "eap=peap;", "psk-flags=0", "password-flags=0", "key-mgmt=wpa-eap", "[ipv4]\nmethod=auto"])
    assert.ok(shown.includes(kept), `${kept} is shown`);
  assert.match(shown, new RegExp(`^private-key-password=${MASK.replace(/\*/g, "\\*")}$`, "m"));
});
