// The HTML report as a person sees it: provision runs for real against sshd hosts
// (two change, one fails its health probe and is rolled back, one is unreachable),
// writes --report x.html, and headless Chromium opens the file, reads the grid,
// clicks cells and finds the diff in the panel.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { stringify } from "yaml";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { startFleet, type TestFleet } from "../support/sshd-hosts.js";
import { removeOnCleanup } from "../support/processes.js";
import { repoRoot } from "../support/cache.js";
import { provision, summary } from "./provision-cli.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// A task name that would break the page if it were not escaped.
const MOTD_TASK = `Message <b>of</b> the "day" & health`;

let fleet: TestFleet;
let dir: string;
let report: string;
let cliResult: Awaited<ReturnType<typeof provision>>;
let context: BrowserContext | undefined;
let page: Page;
const requests: string[] = [];

before(async () => {
  fleet = await startFleet({ count: 3 });
  dir = mkdtempSync(join(tmpdir(), "provision-html-report-"));
  removeOnCleanup(dir);

  // host3's health probe looks for a file that does not exist: its run fails and is rolled back.
  const hosts = Object.fromEntries(fleet.hosts.map((h, i) => [h.name, { address: h.address, health_file: i === 2 ? "/etc/provision-health-ok" : "/etc/hostname" }]));
  const inventory = join(dir, "inventory.yaml");
  writeFileSync(
    inventory,
    stringify({
      all: {
        vars: { user: "root", identity_file: fleet.identityFile, known_hosts_file: fleet.knownHostsFile },
        children: { pis: { hosts: { ...hosts, "dead-pi": { address: fleet.unusedAddress, connect_timeout: 3, health_file: "/etc/hostname" } } } },
      },
    }),
  );
  const playbook = join(dir, "site.yaml");
  writeFileSync(
    playbook,
    stringify([
      {
        name: "HTML report test",
        hosts: "pis",
        plugins: [join(repoRoot, "test/fixtures/provision-plugin-motd")],
        tasks: [
          { name: "Python is present", apt: { name: "python3" } },
          { name: "Keep dhcpcd off the bond", dhcpcd_deny: { interfaces: ["eth0", "wlan0", "bond0"] } },
          { name: MOTD_TASK, motd: { message: "provisioned <by> the HTML report test", require_file: "{{ health_file }}" } },
        ],
      },
    ]),
  );

  report = join(dir, "x.html");
  cliResult = await provision(fleet.controllerArgv, ["--inventory", inventory, "--report", report, "--retry-file", join(dir, "site.retry"), playbook]);

  const profile = mkdtempSync(join(tmpdir(), "provision-chromium-"));
  removeOnCleanup(profile);
  context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 800 } });
  context.on("request", (r) => requests.push(r.url()));
  page = context.pages()[0] ?? (await context.newPage());
  await page.goto(pathToFileURL(report).href);
});

after(async () => {
  await context?.close();
  await fleet?.stop();
});

const states = (host: string) => page.locator(`#grid tbody tr[data-host="${host}"] button.cell`).evaluateAll((cells) => cells.map((c) => c.getAttribute("data-state")));

test("the run itself: two hosts changed, one rolled back, one unreachable", () => {
  assert.equal(cliResult.code, 1, cliResult.output);
  const rows = summary(cliResult.stdout);
  assert.equal(rows.host1.status, "changed", cliResult.stdout);
  assert.equal(rows.host2.status, "changed");
  assert.equal(rows.host3.status, "rolled back");
  assert.equal(rows["dead-pi"].status, "unreachable");
});

test("the page is self-contained: one file, no request beyond it", () => {
  const html = readFileSync(report, "utf8");
  assert.doesNotMatch(html, /<(link|img|iframe)\b|src=|url\(|@import/i, "no external resources");
  assert.ok(requests.length >= 1);
  for (const url of requests) assert.ok(url.startsWith("file:"), `only the report itself was loaded, not ${url}`);
});

test("the header names the mode, run and counts", async () => {
  const header = await page.locator("header").innerText();
  assert.match(header, /apply/);
  assert.match(header, /run\s+\d{8}T\d{6}-[0-9a-f]{6}/);
  assert.match(header, /4 hosts: .*2 changed.*1 rolled back.*1 unreachable/s);
  assert.match(await page.title(), /provision apply report/);
});

test("the grid has one row per host and the right state in every cell", async () => {
  const hosts = await page.locator("#grid tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-host")));
  assert.deepEqual(hosts, ["host1", "host2", "host3", "dead-pi"]);
  const columns = await page.locator("#grid thead th").allInnerTexts();
  assert.deepEqual(
    columns.map((c) => c.trim()),
    ["host", "Python is present", "Keep dhcpcd off the bond", MOTD_TASK],
  );
  assert.equal(await page.locator("#grid thead b").count(), 0, "the task name is text, not markup");

  assert.deepEqual(await states("host1"), ["ok", "changed", "changed"]);
  assert.deepEqual(await states("host2"), ["ok", "changed", "changed"]);
  assert.deepEqual(await states("host3"), ["ok", "rolled_back", "rolled_back"]);
  assert.deepEqual(await states("dead-pi"), ["unreachable", "unreachable", "unreachable"]);

  const texts = await page.locator('#grid tbody tr[data-host="host3"] button.cell').allInnerTexts();
  assert.match(texts[1], /rolled back/);
  assert.match(texts[2], /failed · rolled back/, "the task that failed is told apart from those undone with it");
  assert.match(await page.locator('#grid tbody tr[data-host="dead-pi"] button.cell').first().innerText(), /unreachable/);
});

test("clicking a changed cell shows its change and the unified diff, coloured", async () => {
  const panel = page.locator("#panel");
  assert.equal(await panel.isVisible(), false);
  await page.locator('#grid tbody tr[data-host="host1"] button.cell[data-task="Keep dhcpcd off the bond"]').click();
  await panel.waitFor({ state: "visible" });
  const added = panel.locator("pre.diff span.da", { hasText: "+denyinterfaces eth0 wlan0 bond0" });
  assert.equal(await added.isVisible(), true, await panel.innerText());
  assert.match(await panel.innerText(), /deny eth0, wlan0, bond0 to dhcpcd in \/etc\/dhcpcd\.conf/);
  assert.match(await panel.innerText(), /--- a\/etc\/dhcpcd\.conf/);
  const colour = await added.evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(colour, "rgba(0, 0, 0, 0)", "added lines have a background colour");

  const screenshot = join(dir, "report.png");
  await page.screenshot({ path: screenshot, fullPage: false });
  const keep = process.env.PROVISION_KEEP_HTML_REPORT;
  if (keep) {
    mkdirSync(keep, { recursive: true });
    copyFileSync(screenshot, join(keep, "report.png"));
    copyFileSync(report, join(keep, "report.html"));
  }
  assert.ok(readFileSync(screenshot).length > 10_000, "a real screenshot");

  await page.keyboard.press("Escape");
  await panel.waitFor({ state: "hidden" });
});

test("the rolled-back host's cell shows the failed probe; the unreachable one the error", async () => {
  const panel = page.locator("#panel");
  await page.locator('#grid tbody tr[data-host="host3"] button.cell').nth(2).click();
  await panel.waitFor({ state: "visible" });
  const text = await panel.innerText();
  assert.match(text, /\/etc\/provision-health-ok does not exist/);
  assert.match(text, /made, then rolled back/);
  assert.match(text, /\+provisioned <by> the HTML report test/, "the diff shows the content as text");

  await page.locator('#grid tbody tr[data-host="dead-pi"] button.cell').first().click();
  assert.match(await panel.innerText(), /unreachable at 10\.88\.0\.254:22/);
  await page.locator("#close").click();
  await panel.waitFor({ state: "hidden" });
});

test("a --check run: the rolled-back host shows what would change, the others are ok", async () => {
  const checkReport = join(dir, "check.html");
  const r = await provision(fleet.controllerArgv, [
    "--inventory",
    join(dir, "inventory.yaml"),
    "--check",
    "--limit",
    "all:!dead-pi",
    "--report",
    checkReport,
    "--retry-file",
    join(dir, "check.retry"),
    join(dir, "site.yaml"),
  ]);
  assert.equal(r.code, 2, r.output);
  const check = await context!.newPage();
  try {
    await check.goto(pathToFileURL(checkReport).href);
    assert.match(await check.locator("header").innerText(), /check \(audit, nothing changed\)/);
    const cells = (host: string) => check.locator(`#grid tbody tr[data-host="${host}"] button.cell`);
    assert.deepEqual(await cells("host1").evaluateAll((cs) => cs.map((c) => c.getAttribute("data-state"))), ["ok", "ok", "ok"]);
    assert.deepEqual(await cells("host3").evaluateAll((cs) => cs.map((c) => c.getAttribute("data-state"))), ["ok", "drift", "drift"]);
    assert.match(await cells("host3").nth(1).innerText(), /would change/);
    await cells("host3").nth(1).click();
    assert.match(await check.locator("#panel").innerText(), /1 change to make[\s\S]*\+denyinterfaces eth0 wlan0 bond0/);
  } finally {
    await check.close();
  }
});

test("the summary per host matches the run", async () => {
  const rows = await page.locator("#summary tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll("td")].slice(0, 7).map((td) => td.textContent?.trim())));
  assert.deepEqual(rows, [
    ["host1", fleet.hosts[0].address, "changed", "1", "2", "0", "no"],
    ["host2", fleet.hosts[1].address, "changed", "1", "2", "0", "no"],
    ["host3", fleet.hosts[2].address, "rolled back", "1", "1", "1", "yes"],
    ["dead-pi", fleet.unusedAddress, "unreachable", "0", "0", "1", "no"],
  ]);
});
