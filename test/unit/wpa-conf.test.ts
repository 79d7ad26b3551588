import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeWpaSupplicant, renderWpaSupplicant, type WifiSettings } from "../../modules/network/wifi.js";

const HEADER = "# Managed by provision (bond module): Wi-Fi of wlan0 in bond0";
const home: WifiSettings = { ssid: "home", psk: "correct horse battery", country: "DE", key_mgmt: "WPA-PSK" };

test("wpa_supplicant.conf: no file yet is a file of our own; our own file merged again is unchanged", () => {
  const own = renderWpaSupplicant(home, HEADER);
  assert.equal(mergeWpaSupplicant(null, home, HEADER), own);
  assert.equal(mergeWpaSupplicant(own, home, HEADER), own);
  assert.equal(mergeWpaSupplicant(own, { ...home, country: undefined }, HEADER), own, "without a country, the one there is kept");
});

test("wpa_supplicant.conf shared with others: our network and country replaced in place, every other setting, comment and network kept", () => {
  const theirs = [
    "# the van's networks",
    "ctrl_interface=/var/run/wpa_supplicant",
    "update_config=1",
    "country=GB",
    "",
    "network={",
    '\tssid="depot"',
    '\tpsk="depot passphrase"',
    "\tpriority=5",
    "}",
    "",
    "# the home network, as the old setup wrote it",
    "network={",
    `\tssid=${Buffer.from("home").toString("hex")}`,
    '\tpsk="an old passphrase"',
    "}",
    "network={",
    '\tssid="home"',
    '\tpsk="a duplicate"',
    "}",
    "",
  ].join("\n");
  const merged = mergeWpaSupplicant(theirs, home, HEADER);
  assert.equal(
    merged,
    [
      "# the van's networks",
      "ctrl_interface=/var/run/wpa_supplicant",
      "update_config=1",
      "country=DE",
      "",
      "network={",
      '\tssid="depot"',
      '\tpsk="depot passphrase"',
      "\tpriority=5",
      "}",
      "",
      "# the home network, as the old setup wrote it",
      "network={",
      '\tssid="home"',
      "\tkey_mgmt=WPA-PSK",
      '\tpsk="correct horse battery"',
      "}",
      "",
    ].join("\n"),
  );
  assert.equal(mergeWpaSupplicant(merged, home, HEADER), merged, "a second run changes nothing");
});

test("wpa_supplicant.conf without our network or the settings we need: they are added, the rest stays", () => {
  const theirs = 'update_config=1\nnetwork={\n\tssid="depot"\n\tpsk="depot passphrase"\n}\n';
  const merged = mergeWpaSupplicant(theirs, home, HEADER);
  assert.equal(
    merged,
    'update_config=1\nctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\ncountry=DE\nnetwork={\n\tssid="depot"\n\tpsk="depot passphrase"\n}\n\nnetwork={\n\tssid="home"\n\tkey_mgmt=WPA-PSK\n\tpsk="correct horse battery"\n}\n',
  );
  assert.equal(mergeWpaSupplicant(merged, home, HEADER), merged);
});
