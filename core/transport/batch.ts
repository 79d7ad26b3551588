// Several host-side steps in one remote command: one SSH round trip instead of one per
// step. Each step is an argv (quoted here, as every command is, never pasted) that runs in
// order; the first step that fails ends the batch. A step's stdin (file contents, secrets
// among them) travels on the command's stdin, never on a command line: the batch hands
// each step exactly its own bytes (`head -c`, which reads no further than it is told).
import { randomBytes } from "node:crypto";
import { commandLine } from "./shell.js";
import { lastLine, type ExecResult, type Transport } from "./transport.js";
import { HostError } from "../errors.js";

export interface Step {
  /** What the step does, for errors: "back up /etc/modules". */
  what: string;
  argv: string[];
  /** Read whole by the step (a step that exits 0 must consume all of it). */
  stdin?: string;
  /** Called with the step's result once it succeeded (see runSteps). */
  done?(result: ExecResult): void;
}

/** The shell script that runs `steps` in order, each framed on stdout and stderr by `marker`. */
export function batchScript(steps: Step[], marker: string): string {
  const lines = [`_m='${marker}'`];
  steps.forEach((step, i) => {
    const input = step.stdin === undefined ? "< /dev/null" : "";
    const command = step.stdin === undefined ? commandLine(step.argv) : `head -c ${Buffer.byteLength(step.stdin)} | ${commandLine(step.argv)}`;
    lines.push(
      `printf '%s out ${i}\\n' "$_m"; printf '\\n%s err ${i}\\n' "$_m" >&2`,
      `${command} ${input}`.trimEnd(),
      `_rc=$?; printf '\\n%s rc ${i} %s\\n' "$_m" "$_rc"; [ "$_rc" -eq 0 ] || exit 0`,
    );
  });
  lines.push(`printf '%s end\\n' "$_m"`, "");
  return lines.join("\n");
}

/** What each step that ran printed and how it exited (a failed step is the last one). */
export function parseBatchOutput(steps: Step[], output: ExecResult, marker: string): ExecResult[] {
  const split = (text: string) => `\n${text}`.split(`\n${marker} `).slice(1);
  const stdout = new Map<number, string>();
  const codes = new Map<number, number>();
  for (const part of split(output.stdout)) {
    const eol = part.indexOf("\n");
    const [tag, i, code] = (eol < 0 ? part : part.slice(0, eol)).split(" ");
    if (tag === "out") stdout.set(Number(i), eol < 0 ? "" : part.slice(eol + 1));
    if (tag === "rc") codes.set(Number(i), Number(code));
  }
  const stderr = new Map(
    split(output.stderr).map((part) => {
      const eol = part.indexOf("\n");
      return [Number(part.slice(0, eol < 0 ? undefined : eol).split(" ")[1]), eol < 0 ? "" : part.slice(eol + 1)] as const;
    }),
  );
  const results: ExecResult[] = [];
  for (let i = 0; i < steps.length && codes.has(i); i++) {
    results.push({ code: codes.get(i)!, stdout: stdout.get(i) ?? "", stderr: stderr.get(i) ?? "" });
  }
  return results;
}

/**
 * Run the steps in one round trip. Returns one result per step that ran; fewer than
 * `steps` means one failed (its result is the last). A batch cut short by anything other
 * than a failed step is an error.
 */
export async function runBatch(connection: Transport, steps: Step[]): Promise<ExecResult[]> {
  if (!steps.length) return [];
  const marker = `::provision-batch-${randomBytes(6).toString("hex")}::`;
  const output = await connection.exec(["sh", "-c", batchScript(steps, marker)], steps.map((s) => s.stdin ?? "").join(""));
  const results = parseBatchOutput(steps, output, marker);
  const failed = results.length > 0 && results.at(-1)!.code !== 0;
  if (!failed && !output.stdout.includes(`${marker} end`))
    throw new BatchCut(
      connection.target.name,
      `the host stopped the batch at "${steps[results.length]?.what ?? "its end"}" (exit ${output.code}${lastWords(output.stderr, marker)})`,
      results,
    );
  return results;
}

/** The batch ended without a failed step and before its end: `results` are the steps that finished. */
export class BatchCut extends HostError {
  constructor(
    host: string,
    message: string,
    readonly results: ExecResult[],
  ) {
    super(host, message);
  }
}

/** The error of a failed step, worded as Connection.run words a failed command. */
export function stepFailure(host: string, step: Step, r: ExecResult): StepFailed {
  const detail = r.stderr.trim() ? ` (${lastLine(r.stderr)})` : "";
  return new StepFailed(host, `${step.what}: exited ${r.code}${detail}`, step, r);
}

export class StepFailed extends HostError {
  constructor(
    host: string,
    message: string,
    readonly step: Step,
    readonly result: ExecResult,
  ) {
    super(host, message);
  }
}

/** runBatch, then each successful step's done(); a failed step throws StepFailed. */
export async function runSteps(connection: Transport, steps: Step[]): Promise<ExecResult[]> {
  const results = await runBatch(connection, steps);
  results.forEach((r, i) => r.code === 0 && steps[i].done?.(r));
  const last = results.at(-1);
  if (last && last.code !== 0) throw stepFailure(connection.target.name, steps[results.length - 1], last);
  return results;
}

function lastWords(stderr: string, marker: string): string {
  const line = stderr
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith(marker))
    .pop();
  return line ? `: ${line.slice(0, 300)}` : "";
}
