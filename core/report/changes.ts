// How the core presents a planned change: summary, symbol and unified diff.
import { createTwoFilesPatch } from "diff";
import type { Change } from "../module-api.js";
import { maskReplaced } from "../config/secrets.js";

export interface ShownChange {
  kind: Change["kind"];
  summary: string;
  path?: string;
  command?: string;
  diff?: string;
  reboot?: boolean;
}

function symbol(change: Change | ShownChange): string {
  if (change.kind === "file" && "before" in change) return change.before === null ? "+" : change.after === null ? "-" : "~";
  return { file: "~", command: "!", pending: "…", reboot: "⟳" }[change.kind];
}

export function unifiedDiff(path: string, before: string | null, after: string | null): string {
  return createTwoFilesPatch(
    before === null ? "/dev/null" : `a${path}`,
    after === null ? "/dev/null" : `b${path}`,
    before ?? "",
    after ?? "",
    undefined,
    undefined,
    { context: 3 },
  ).replace(/^=+\n/m, "").replace(/^Index:.*\n/m, "");
}

/** Render a change for output and reports, with secrets masked and diffs optional. */
export function showChange(change: Change, mask: (s: string) => string, showDiff: boolean): ShownChange {
  const shown: ShownChange = { kind: change.kind, summary: `${symbol(change)} ${mask(change.summary)}`, reboot: change.reboot };
  if (change.kind === "file") {
    shown.path = change.path;
    const after = change.after === null ? null : mask(change.after);
    const before = change.before === null ? null : maskReplaced(mask(change.before), after ?? "");
    shown.diff = showDiff ? unifiedDiff(change.path, before, after) : "(diff hidden: the task sets diff: false)\n";
  }
  if (change.kind === "command") shown.command = mask(change.argv.join(" "));
  return shown;
}
