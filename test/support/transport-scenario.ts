// One host-side scenario of the transaction scripts, run through a transport chosen on the
// command line, so the integration test runs the very same steps over SSH and locally:
//   node transport-scenario.js '{"transport":"ssh"|"local","target":{…},"prefix":[…]}'
// Prints what it saw as one JSON line.
import { SshTransport } from "../../core/transport/ssh.js";
import { LocalTransport } from "../../core/transport/local.js";
import type { ConnectionTarget, Transport } from "../../core/transport/transport.js";
import { runSteps } from "../../core/transport/batch.js";
import { gatherStep } from "../../core/run/facts.js";
import { Transaction, lastTransactionProbe } from "../../core/run/transaction.js";

export const SCENARIO_FILE = "/etc/provision-transport-test.conf";
export const SCENARIO_MARKER = "/var/tmp/provision-transport-marker";

interface Options {
  transport: "ssh" | "local";
  target: ConnectionTarget;
  prefix?: string[];
  runId: string;
}

function open(o: Options): Transport {
  return o.transport === "ssh" ? new SshTransport(o.target) : new LocalTransport(o.target, { prefix: o.prefix });
}

async function scenario(o: Options): Promise<Record<string, unknown>> {
  const t = open(o);
  await t.connect();
  try {
    const tx = new Transaction(t, o.runId);
    const { step, read } = gatherStep([{ file: SCENARIO_FILE }, lastTransactionProbe]);
    const [gathered] = await tx.lock(false, [step]);
    const facts = read(t.target.name, gathered);
    await runSteps(t, [
      ...tx.writeSteps(SCENARIO_FILE, "written through a transport\n", { mode: "0600" }),
      ...tx.undoSteps(["rm", "-f", "--", SCENARIO_MARKER], false),
      { what: "touch the marker", argv: ["touch", "--", SCENARIO_MARKER] },
    ]);
    const written = await t.readFile(SCENARIO_FILE);
    const marker = await t.readFile(SCENARIO_MARKER);
    const problems = await tx.restore("all");
    await tx.mark("rolled_back");
    const after = { file: await t.readFile(SCENARIO_FILE), marker: await t.readFile(SCENARIO_MARKER) };
    const state = await tx.state();
    await tx.unlock();
    return {
      hostname: facts.hostFacts.hostname,
      fileBefore: (facts.results.get(JSON.stringify({ file: SCENARIO_FILE })) as { content: string | null }).content,
      written,
      marker,
      problems,
      after,
      state,
      unlocked: tx.unlocked,
    };
  } finally {
    t.close();
  }
}

scenario(JSON.parse(process.argv[2]) as Options).then(
  (r) => console.log(JSON.stringify(r)),
  (e) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  },
);
