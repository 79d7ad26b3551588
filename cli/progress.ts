// The live display of a run: listr2 (a live list on a terminal, plain lines otherwise or
// with --verbose), fed by the run's events. The plain lines are read by the lab tests and
// the benchmark: their wording lives in core/report/progress.ts.
import { Listr } from "listr2";
import { failedStates, type RunSettings, type RunView } from "../core/run/run.js";
import { batchHeader, describeEvent, hostOutcome, playHeader } from "../core/report/progress.js";
import { maskOfHost } from "../core/report/changes.js";

export function listrView(settings: RunSettings): RunView {
  const print = (text: string) => settings.renderer !== "silent" && process.stdout.write(text);
  return {
    play: (play, hosts) => print(playHeader(play, hosts, settings.check)),
    batch: (index, count, hosts) => print(batchHeader(index, count, hosts)),
    hosts: async (hosts, runOne) => {
      const listr = new Listr(
        hosts.map((work) => ({
          title: work.name,
          task: async (_: unknown, task: { output: string; title: string }) => {
            const result = await runOne(work, (event) => (task.output = describeEvent(event)));
            const outcome = hostOutcome(result, maskOfHost(result));
            const failed = failedStates.has(result.status);
            // The simple renderer (not a terminal) prints a failure as "✖ TITLE [FAILED: MESSAGE]":
            // the outcome goes in one of them, not both.
            if (!failed || settings.renderer !== "simple") task.title = `${work.name}: ${outcome}`;
            if (failed) throw new Error(settings.renderer === "simple" ? outcome : task.title);
          },
        })),
        {
          concurrent: Math.max(1, settings.forks),
          exitOnError: false,
          renderer: settings.renderer,
          fallbackRenderer: settings.renderer === "verbose" ? "verbose" : "simple",
          rendererOptions: { collapseErrors: false, showErrorMessage: false },
        } as never,
      );
      await listr.run();
    },
  };
}
