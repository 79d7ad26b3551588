// multiwan: rendering, the live-state comparison and planning, from facts captured on
// the lab's Debian 12 guest (ip -j, nft -j). The agent script is checked by a real shell.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import multiwan, {
  AGENT,
  UNIT,
  PATHS,
  desiredRules,
  renderIptables,
  firewallProblems,
  healthVerdict,
  liveProblems,
  multiwanSchema,
  parseHealth,
  renderConfig,
  renderNft,
  renderSysctl,
  routeProblems,
  ruleProblems,
  type MultiwanArgs,
} from "../../modules/multiwan/index.js";
import { IPT_CHAINS, IPT_TAG, NFT_TABLE, SERVICE } from "../../modules/multiwan/schema.js";
import { UNDO_ACTIVATE } from "../../modules/multiwan/render.js";
import { compile } from "../../core/config/schema.js";
import { PlanError, type CommandOutput, type PlanContext, type Verdict } from "../../core/module-api.js";

const context: PlanContext = { host: "pi", hostFacts: { bootId: "x", bootTime: 1000, systemd: true, hostname: "pi" }, facts: {}, rebootPending: false, rebootReasons: [] };

function argsOf(raw: unknown): MultiwanArgs {
  const copy = structuredClone(raw);
  const validate = compile(multiwanSchema);
  assert.ok(validate(copy), JSON.stringify(validate.errors));
  return copy as MultiwanArgs;
}

const args = argsOf({
  uplinks: [
    { name: "isp1", interface: "eth1", gateway: "10.201.0.1", weight: 9 },
    { name: "isp2", interface: "eth2", gateway: "10.202.0.1", weight: 10 },
  ],
  check: { targets: ["198.51.100.10"] },
});

const ok = (stdout: string): CommandOutput => ({ code: 0, stdout });
const failed: CommandOutput = { code: 1, stdout: "" };

// captured from the lab guest with the configuration above running
const RULES = ok(
  '[{"priority":0,"src":"all","table":"local"},{"priority":30000,"src":"all","table":"main","suppress_prefixlen":0},{"priority":30010,"src":"all","fwmark":"0x10000","fwmask":"0xff0000","table":"201"},{"priority":30011,"src":"all","fwmark":"0x20000","fwmask":"0xff0000","table":"202"},{"priority":30090,"src":"all","table":"200"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]',
);
const ROUTES = ok(
  '[{"dst":"default","table":"200","flags":[],"nexthops":[{"gateway":"10.201.0.1","dev":"eth1","weight":9,"flags":[]},{"gateway":"10.202.0.1","dev":"eth2","weight":10,"flags":[]}]},{"dst":"default","gateway":"10.201.0.1","dev":"eth1","table":"201","flags":[]},{"dst":"default","gateway":"10.202.0.1","dev":"eth2","table":"202","flags":[]},{"dst":"default","gateway":"10.77.0.1","dev":"eth0","flags":["onlink"]},{"dst":"10.77.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.77.0.11","flags":[]}]',
);
const HEALTHY = parseHealth("isp1 up 9 1795527305 via 10.201.0.1 dev eth1\nisp2 up 9 1795527305 via 10.202.0.1 dev eth2\n");

function nftListing(a: MultiwanArgs, drop?: string): CommandOutput {
  const items: unknown[] = [{ metainfo: { version: "1.0.6" } }, { table: { family: "inet", name: "provision_multiwan" } }];
  const chains = ["prerouting", "output", "postrouting", "nat"];
  for (const c of chains) items.push({ chain: { family: "inet", table: "provision_multiwan", name: c } });
  const comments: Record<string, string[]> = {
    prerouting: ["restore the uplink mark", ...a.uplinks.map((u) => `${u.name}: mark connections from it`)],
    output: ["restore the uplink mark"],
    postrouting: a.uplinks.map((u) => `${u.name}: mark new connections`),
    nat: a.uplinks.filter((u) => u.masquerade).map((u) => `${u.name}: masquerade`),
  };
  for (const c of chains) for (const comment of comments[c]) if (comment !== drop) items.push({ rule: { chain: c, comment, expr: [] } });
  return ok(JSON.stringify({ nftables: items }));
}

const live = {
  rules: RULES,
  routes: ROUTES,
  firewall: nftListing(args),
  active: ok("active\n"),
  enabled: ok("enabled\n"),
  sysctls: ok("net.ipv4.ip_forward = 1\nnet.ipv4.fib_multipath_hash_policy = 1\nnet.ipv4.conf.all.rp_filter = 2\n"),
};

test("schema defaults: weight 1, masquerade on, checks every second, 3 misses down, 3 answers up", () => {
  const a = argsOf({
    uplinks: [
      { name: "a", interface: "eth1" },
      { name: "b", interface: "ppp0" },
    ],
    check: { targets: ["192.0.2.1"] },
  });
  assert.equal(a.uplinks[0].weight, 1);
  assert.equal(a.uplinks[1].masquerade, true);
  assert.deepEqual({ ...a.check }, { targets: ["192.0.2.1"], interval: 1, timeout: 1, fail_after: 3, recover_after: 3, wait: 30 });
  assert.equal(a.priority_base, 30000);
  const validate = compile(multiwanSchema);
  assert.equal(validate({ uplinks: [{ name: "only", interface: "eth1" }] }), false, "one uplink is not multi-WAN");
  assert.equal(
    validate({
      uplinks: [
        { name: "a b", interface: "eth1" },
        { name: "c", interface: "eth2" },
      ],
    }),
    false,
    "names become shell variable names",
  );
  assert.equal(
    validate({
      uplinks: [
        { name: "a", interface: "eth1;reboot" },
        { name: "c", interface: "eth2" },
      ],
    }),
    false,
  );
});

test("the rules: main without its default first, one fwmark rule per uplink, then the balanced table", () => {
  assert.deepEqual(desiredRules(args), [
    "30000: lookup main suppress_prefixlength 0",
    "30010: fwmark 0x10000/0xff0000 lookup 201",
    "30011: fwmark 0x20000/0xff0000 lookup 202",
    "30090: lookup 200",
  ]);
  assert.deepEqual(ruleProblems(args, RULES), []);
  const missing = ok(RULES.stdout.replace(',{"priority":30011,"src":"all","fwmark":"0x20000","fwmask":"0xff0000","table":"202"}', ""));
  assert.deepEqual(ruleProblems(args, missing), ["ip rule missing: 30011: fwmark 0x20000/0xff0000 lookup 202"]);
  const foreign = ok(RULES.stdout.replace('{"priority":0,', '{"priority":30050,"src":"all","table":"99"},{"priority":0,'));
  assert.deepEqual(ruleProblems(args, foreign), ["unexpected ip rule in provision's range: 30050: lookup 99"]);
});

test("the ruleset marks per uplink in its own bits, restores marks, masquerades, and replaces itself atomically", () => {
  const nft = renderNft(args);
  assert.match(nft, /^table inet provision_multiwan\ndelete table inet provision_multiwan\ntable inet provision_multiwan \{/m);
  assert.match(nft, /ct mark & 0xff0000 != 0 meta mark set ct mark & 0xff0000 comment "restore the uplink mark"/);
  assert.match(nft, /ct mark & 0xff0000 == 0 oifname "eth2" ct mark set ct mark & 0xff00ffff \| 0x20000 comment "isp2: mark new connections"/);
  assert.match(nft, /oifname "eth1" masquerade/);
  const noNat = renderNft({ ...args, uplinks: args.uplinks.map((u) => ({ ...u, masquerade: false })) });
  assert.doesNotMatch(noNat, /masquerade/);
});

test("the config file is shell-quoted and names every uplink's mark, table and targets", () => {
  const conf = renderConfig({ ...args, check: { ...args.check, targets: ["198.51.100.10", "192.0.2.1"] } });
  assert.match(conf, /^UPLINKS='isp1 isp2'$/m);
  assert.match(conf, /^isp1_MARK=65536$/m, "ping -m takes decimal marks");
  assert.match(conf, /^isp2_TABLE=202$/m);
  assert.match(conf, /^isp2_TARGETS='198\.51\.100\.10 192\.0\.2\.1'$/m);
  assert.match(conf, /^isp1_GATEWAY=10\.201\.0\.1$/m);
  const ppp = renderConfig({ ...args, uplinks: [{ ...args.uplinks[0], gateway: undefined, interface: "ppp0" }, args.uplinks[1]] });
  assert.match(ppp, /^isp1_GATEWAY=''$/m, "no gateway: the agent finds it at run time (PPP, DHCP)");
});

test("the agent and the rollback parse as POSIX shell (dash -n) and the sourced config sets what the agent reads", () => {
  const r = spawnSync("sh", ["-n"], { input: AGENT, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const vars = spawnSync("sh", ["-c", `${renderConfig(args)}\necho "$UPLINKS|$isp2_WEIGHT|$isp1_PRIORITY|$LAST_TABLE|$BALANCED_PRIORITY"`], { encoding: "utf8" });
  assert.equal(vars.stdout.trim(), "isp1 isp2|10|30010|202|30090");
  assert.match(UNIT, new RegExp(`ExecStartPre=${PATHS.agent} start`));
});

test("the shell files spell out the names the module owns as schema.ts does, and ship with clear-state.sh inlined", () => {
  for (const script of [AGENT, UNDO_ACTIVATE]) {
    assert.doesNotMatch(script, /^[ \t]*# (include|shellcheck) /m, "include lines replaced, shellcheck directives left out");
    assert.match(script, /^clear_state\(\) \{/m);
    assert.ok(script.includes(`nft delete table inet ${NFT_TABLE} `));
    for (const c of Object.values(IPT_CHAINS)) assert.ok(script.includes(`iptables -t ${c.table} -D ${c.parent} -m comment --comment ${IPT_TAG} -j ${c.chain} `), c.chain);
    assert.ok(script.includes(`systemctl stop ${SERVICE} `) || script.includes(`RUN=/run/${SERVICE}\n`));
  }
  assert.ok(AGENT.includes(`\n. ${PATHS.config}\n`) && AGENT.includes(`nft list table inet ${NFT_TABLE} `) && AGENT.includes(`-j ${IPT_CHAINS.prerouting.chain} `));
  assert.equal(PATHS.status, `/run/${SERVICE}/status`);
  assert.equal(spawnSync("sh", ["-n"], { input: UNDO_ACTIVATE, encoding: "utf8" }).status, 0);
});

test("routes: each uplink's own table, and the multipath route holding exactly the uplinks that are up", () => {
  assert.deepEqual(routeProblems(args, ROUTES, HEALTHY), []);
  const isp2Down = parseHealth("isp1 up 9 0 via 10.201.0.1 dev eth1\nisp2 down 9 0 via 10.202.0.1 dev eth2\n");
  assert.deepEqual(routeProblems(args, ROUTES, isp2Down), ["isp2 is down but still in the multipath route (table 200)"]);
  const withdrawn = ok(ROUTES.stdout.replace(/"nexthops":\[.*?\]\}\]\}/, '"gateway":"10.201.0.1","dev":"eth1"}'));
  assert.deepEqual(routeProblems(args, withdrawn, isp2Down), [], "isp2 withdrawn while down: as it should be");
  const reweighted = ok(ROUTES.stdout.replace('"weight":10', '"weight":1'));
  assert.deepEqual(routeProblems(args, reweighted, HEALTHY), ["isp2 has weight 1 in the multipath route, want 10"]);
  const wrongGateway = ok(ROUTES.stdout.replace('"gateway":"10.202.0.1","dev":"eth2","table":"202"', '"gateway":"10.202.0.9","dev":"eth2","table":"202"'));
  assert.deepEqual(routeProblems(args, wrongGateway, HEALTHY), ["table 202 (isp2) routes via 10.202.0.9 dev eth2, want 10.202.0.1 dev eth2"]);
});

test("nftables: the live table is compared chain by chain, by each rule's comment", () => {
  assert.deepEqual(firewallProblems(args, nftListing(args)), []);
  assert.deepEqual(firewallProblems(args, failed), ["nftables table inet provision_multiwan is missing"]);
  assert.deepEqual(firewallProblems(args, nftListing(args, "isp1: masquerade")), ["nftables chain nat has rules [isp2: masquerade], want [isp1: masquerade, isp2: masquerade]"]);
});

function facts(over: Partial<Record<string, unknown>> = {}) {
  const file = (path: string, content: string | null) => ({ path, content });
  const installed = {
    agent: file(PATHS.agent, AGENT),
    config: file(PATHS.config, renderConfig(args)),
    nftRuleset: file(PATHS.nftRuleset, renderNft(args)),
    iptablesRuleset: file(PATHS.iptablesRuleset, null),
    sysctl: file(PATHS.sysctl, renderSysctl()),
    unit: file(PATHS.unit, UNIT),
    status: file(PATHS.status, "isp1 up 9 1795527305 via 10.201.0.1 dev eth1\nisp2 up 9 1795527305 via 10.202.0.1 dev eth2\n"),
  };
  return { ...live, ...installed, ...over } as never;
}

test("plan: nothing to do when files and live state match; live drift alone restarts the agent", () => {
  assert.deepEqual(multiwan.plan(args, facts(), context), []);
  const [change] = multiwan.plan(args, facts({ active: ok("inactive\n") }), context);
  assert.equal(change.kind, "command");
  assert.match(change.summary, /the live state drifted: provision-multiwan\.service is inactive/);
  assert.equal(change.disruptive, true, "restarting routing can cut the management path: armed first");
});

test("notes: an audit of a router running as configured still names the uplinks that are down right now", () => {
  const isp2Down = {
    status: { path: PATHS.status, content: "isp1 up 9 1795527305 via 10.201.0.1 dev eth1\nisp2 down 9 1795527305 via 10.202.0.1 dev eth2\n" },
    routes: ok(
      ROUTES.stdout.replace(
        '{"dst":"default","table":"200","flags":[],"nexthops":[{"gateway":"10.201.0.1","dev":"eth1","weight":9,"flags":[]},{"gateway":"10.202.0.1","dev":"eth2","weight":10,"flags":[]}]}',
        '{"dst":"default","gateway":"10.201.0.1","dev":"eth1","table":"200","flags":[]}',
      ),
    ),
  };
  assert.notEqual(isp2Down.routes.stdout, ROUTES.stdout);
  assert.deepEqual(multiwan.plan(args, facts(isp2Down), context), [], "the agent withdrew isp2 as it should: no drift");
  assert.deepEqual(multiwan.notes!(args, facts(isp2Down), context), ["uplink isp2 (eth2) is down: no answer from 198.51.100.10 through it (the health agent's last verdict)"]);
  assert.deepEqual(multiwan.notes!(args, facts(), context), [], "all up: nothing to say");
  assert.deepEqual(multiwan.notes!(args, facts({ ...isp2Down, active: ok("inactive\n") }), context), [], "a stopped agent is drift, and its last verdict is stale");
});

test("plan on a fresh host: five files, then activation whose undo knows the old sysctls and service state", () => {
  const fresh = facts({
    agent: { path: PATHS.agent, content: null },
    config: { path: PATHS.config, content: null },
    nftRuleset: { path: PATHS.nftRuleset, content: null },
    sysctl: { path: PATHS.sysctl, content: null },
    unit: { path: PATHS.unit, content: null },
    status: { path: PATHS.status, content: null },
    rules: ok('[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"}]'),
    routes: ok("[]"),
    firewall: failed,
    active: ok("inactive\n"),
    enabled: { code: 1, stdout: "" },
    sysctls: ok("net.ipv4.ip_forward = 0\nnet.ipv4.fib_multipath_hash_policy = 0\nnet.ipv4.conf.all.rp_filter = 2\n"),
  });
  const changes = multiwan.plan(args, fresh, context);
  assert.deepEqual(
    changes.map((c) => (c.kind === "file" ? c.path : c.kind)),
    [PATHS.agent, PATHS.config, PATHS.nftRuleset, PATHS.sysctl, PATHS.unit, "command"],
  );
  const activate = changes[5];
  assert.ok(activate.kind === "command" && activate.undo);
  assert.deepEqual(activate.undo.slice(4), ["0", "0", "30000", "200", "202", "net.ipv4.ip_forward=0", "net.ipv4.fib_multipath_hash_policy=0"]);
  assert.equal(changes.find((c) => c.kind === "file" && c.path === PATHS.agent && c.mode === "0755") !== undefined, true);
});

test("plan refuses to take over someone else's rules or tables, and duplicate uplinks", () => {
  const fresh = { config: { path: PATHS.config, content: null } };
  const foreign = ok('[{"priority":30005,"src":"all","fwmark":"0x1","table":"100"}]');
  assert.throws(
    () => multiwan.plan(args, facts({ ...fresh, rules: foreign }), context),
    (e: Error) => e instanceof PlanError && /30005: fwmark 0x1 lookup 100 \(choose another priority_base\)/.test(e.message),
  );
  const taken = ok('[{"dst":"default","gateway":"192.168.1.1","dev":"eth0","table":"201"}]');
  assert.throws(() => multiwan.plan(args, facts({ ...fresh, rules: ok("[]"), routes: taken }), context), /table 201 \(choose another table_base\)/);
  const twice = { ...args, uplinks: [args.uplinks[0], { ...args.uplinks[1], interface: "eth1" }] };
  assert.throws(() => multiwan.plan(twice, facts(), context), /two uplinks have the interface eth1/);
  const nothingToPing = { ...args, check: { ...args.check, targets: [] } };
  assert.throws(() => multiwan.plan(nothingToPing, facts(), context), /has nothing to ping/);
});

test("verify: every uplink must answer through itself, and the state must be live", () => {
  const check = (facts: unknown) => multiwan.verify!.check(args, facts as never) as Verdict;
  const healthy = { ...live, health: ok("isp1 up 6 0 via 10.201.0.1 dev eth1\nisp2 up 6 0 via 10.202.0.1 dev eth2\n") };
  assert.deepEqual(check(healthy), { problems: [], notes: [] });
  const down = { ...live, health: ok("isp1 up 6 0 via 10.201.0.1 dev eth1\nisp2 down 6 0 via 10.202.0.99 dev eth2\n") };
  assert.ok(check(down).problems.includes("uplink isp2 (eth2) is down: no answer from 198.51.100.10 through it"));
  assert.deepEqual(check({ ...live, health: ok("") }).problems.slice(0, 1), ["the health agent (provision-multiwan.service) reports nothing: it is not running"]);
  assert.deepEqual(liveProblems(args, { ...live, sysctls: ok("net.ipv4.ip_forward = 0\n") }, HEALTHY), [
    "net.ipv4.ip_forward is 0, want 1",
    "net.ipv4.fib_multipath_hash_policy is unset, want 1",
    "net.ipv4.conf.all.rp_filter is unset, want 2",
  ]);
});

test("verify with check.required_up: a dead uplink is a note while enough others answer, else it fails the run", () => {
  const oneOfTwo = { ...args, check: { ...args.check, required_up: 1 } };
  const health = (text: string) => parseHealth(text);
  const isp2Down = health("isp1 up 6 0 via 10.201.0.1 dev eth1\nisp2 down 6 0 via 10.202.0.1 dev eth2\n");
  assert.deepEqual(healthVerdict(oneOfTwo, isp2Down), {
    problems: [],
    notes: ["uplink isp2 (eth2) is down: no answer from 198.51.100.10 through it; it carries nothing until it answers (1 of 2 uplinks required)"],
  });
  assert.equal(healthVerdict(args, isp2Down).problems.length, 1, "by default every uplink must answer");
  assert.equal(healthVerdict(oneOfTwo, health("isp1 down 6 0 via 10.201.0.1 dev eth1\nisp2 down 6 0 via 10.202.0.1 dev eth2\n")).problems.length, 2);
  assert.deepEqual(
    healthVerdict(oneOfTwo, health("isp1 up 6 0 via 10.201.0.1 dev eth1\nisp2 down 1 0 via 10.202.0.1 dev eth2\n")).problems,
    ["no verdict on isp2 yet from the health agent"],
    "an uplink without a verdict yet is never waved through",
  );
  assert.throws(() => multiwan.plan({ ...args, check: { ...args.check, required_up: 3 } }, facts(), context), /required_up is 3 but there are only 2 uplinks/);
});

// iptables-save from the lab guest (iptables 1.8.9, nf_tables backend) with `firewall: iptables`
const IPTABLES_SAVE = `*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PROVISION_MW_OUT - [0:0]
:PROVISION_MW_POST - [0:0]
:PROVISION_MW_PRE - [0:0]
-A PREROUTING -m comment --comment provision-multiwan -j PROVISION_MW_PRE
-A OUTPUT -m comment --comment provision-multiwan -j PROVISION_MW_OUT
-A POSTROUTING -m comment --comment provision-multiwan -j PROVISION_MW_POST
-A PROVISION_MW_OUT -m connmark ! --mark 0x0/0xff0000 -m comment --comment "restore the uplink mark" -j CONNMARK --restore-mark --nfmask 0xff0000 --ctmask 0xff0000
-A PROVISION_MW_POST -o eth1 -m connmark --mark 0x0/0xff0000 -m comment --comment "isp1: mark new connections" -j CONNMARK --set-xmark 0x10000/0xff0000
-A PROVISION_MW_POST -o eth2 -m connmark --mark 0x0/0xff0000 -m comment --comment "isp2: mark new connections" -j CONNMARK --set-xmark 0x20000/0xff0000
-A PROVISION_MW_PRE -m connmark ! --mark 0x0/0xff0000 -m comment --comment "restore the uplink mark" -j CONNMARK --restore-mark --nfmask 0xff0000 --ctmask 0xff0000
-A PROVISION_MW_PRE -i eth1 -m conntrack --ctstate NEW -m comment --comment "isp1: mark connections from it" -j CONNMARK --set-xmark 0x10000/0xff0000
-A PROVISION_MW_PRE -i eth2 -m conntrack --ctstate NEW -m comment --comment "isp2: mark connections from it" -j CONNMARK --set-xmark 0x20000/0xff0000
COMMIT
*nat
:PROVISION_MW_NAT - [0:0]
-A POSTROUTING -m comment --comment provision-multiwan -j PROVISION_MW_NAT
-A PROVISION_MW_NAT -o eth1 -m comment --comment "isp1: masquerade" -j MASQUERADE
-A PROVISION_MW_NAT -o eth2 -m comment --comment "isp2: masquerade" -j MASQUERADE
COMMIT
`;

test("iptables: own chains entered by one tagged jump each, the same rules, compared from iptables-save", () => {
  const a = { ...args, firewall: "iptables" as const };
  const rendered = renderIptables(a);
  for (const line of IPTABLES_SAVE.split("\n").filter((l) => l.startsWith("-A "))) assert.ok(rendered.includes(line), `rendered as iptables-save prints it: ${line}`);
  assert.match(rendered, /^\*mangle\n:PROVISION_MW_PRE - \[0:0\]/m);
  assert.deepEqual(firewallProblems(a, ok(IPTABLES_SAVE)), []);
  assert.deepEqual(firewallProblems(a, ok(IPTABLES_SAVE.replace("-A OUTPUT -m comment --comment provision-multiwan -j PROVISION_MW_OUT\n", ""))), [
    "mangle OUTPUT has 0 jumps to PROVISION_MW_OUT, want 1",
  ]);
  assert.deepEqual(firewallProblems(a, ok(IPTABLES_SAVE.replace(/-A PROVISION_MW_NAT -o eth2.*\n/, ""))), [
    "iptables chain PROVISION_MW_NAT has rules [isp1: masquerade], want [isp1: masquerade, isp2: masquerade]",
  ]);
  assert.deepEqual(firewallProblems(a, failed), ["iptables-save failed: is iptables installed?"]);
  const changes = multiwan.plan(a, facts({ firewall: ok(IPTABLES_SAVE) }), context);
  const written = changes.find((c) => c.kind === "file" && c.path === PATHS.iptablesRuleset);
  assert.ok(written?.kind === "file" && written.after === rendered, "switching firewalls writes the iptables rules…");
  const removal = changes.find((c) => c.kind === "file" && c.path === PATHS.nftRuleset);
  assert.ok(removal?.kind === "file" && removal.after === null, "…and removes the nftables file");
});

test("the agent's hysteresis, run by a real shell: down after FAIL_AFTER misses in a row, up after RECOVER_AFTER answers", () => {
  const functions = AGENT.replace(/^\. .*$/m, "").replace(/\ncase "\$\{1:-\}" in[\s\S]*$/, "\n");
  const script = `${functions}
say() { :; }
UPLINKS=a FAIL_AFTER=3 RECOVER_AFTER=2 a_IFACE=eth1
state_a=up streak_a=0 checks_a=0
for ok in 0 0 1 0 0 0 1 1 0 1 1; do flipped=0; record a $ok; printf '%s%s ' "$state_a" "$flipped"; done
echo "checks=$checks_a"`;
  const r = spawnSync("sh", ["-c", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "up0 up0 up0 up0 up0 down1 down0 up1 up0 up0 up0 checks=11");
});

test("the agent's nexthop in a real shell: the configured gateway, dev only on a point-to-point link (PPP), else the link's own default route (DHCP)", () => {
  const functions = AGENT.replace(/^\. .*$/m, "").replace(/\ncase "\$\{1:-\}" in[\s\S]*$/, "\n");
  // `ip` answers as it would for each kind of link; lo stands in for a NIC that exists
  const hop = (gateway: string, link: string, route: string) =>
    spawnSync(
      "sh",
      [
        "-c",
        `${functions}
ip() { case "$*" in "-o link show dev lo") echo '${link}' ;; "-4 route show table main default dev lo") echo '${route}' ;; esac; }
u_IFACE=lo u_GATEWAY=${gateway}
nexthop u`,
      ],
      { encoding: "utf8" },
    ).stdout.trim();
  const ethernet = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536";
  assert.equal(hop("192.0.2.1", ethernet, ""), "via 192.0.2.1 dev lo");
  assert.equal(hop("", "7: ppp0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1492", ""), "dev lo");
  assert.equal(hop("", ethernet, "default via 198.51.100.254 proto dhcp src 198.51.100.7 metric 1002"), "via 198.51.100.254 dev lo");
  assert.equal(hop("", ethernet, ""), "", "no gateway known yet: the uplink has no route (and counts as down)");
});
