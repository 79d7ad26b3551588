// The HTML report: one self-contained page (inline CSS and a little inline JS, no
// external resources) with a grid of hosts × tasks. Clicking a cell shows that task's
// changes, diffs, problems and notes. Everything in a RunResult is already masked;
// this file only escapes it and never adds anything from elsewhere.
import { writeFileSync } from "node:fs";
import type { ShownChange, ShownHost as HostResult, ShownRun as RunResult, ShownTask as TaskResult } from "./changes.js";
import { describeOutcomes, outcomeCounts, summaryRow } from "./output.js";

/** What a cell of the grid shows. */
export type CellState = "ok" | "changed" | "drift" | "failed" | "rolled_back" | "unreachable" | "not_run";

const LABELS: Record<CellState, string> = {
  ok: "ok",
  changed: "changed",
  drift: "would change",
  failed: "failed",
  rolled_back: "rolled back",
  unreachable: "unreachable",
  not_run: "not run",
};

const HOST_LABELS: Record<HostResult["status"], string> = LABELS;

/** The host's status as the summary table says it ("rolled back by host" when its own timer reverted it). */
function hostLabel(host: HostResult): string {
  return host.status === "rolled_back" && host.rolledBackBy === "host" ? "rolled back by host" : HOST_LABELS[host.status];
}

function escapeHtml(text: unknown): string {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

interface Column {
  key: string;
  name: string;
  handler: boolean;
}

/** A task's column key: its name (handlers apart), numbered when a host runs the same name twice. */
function keyedTasks(host: HostResult): { key: string; task: TaskResult }[] {
  const seen = new Map<string, number>();
  return host.tasks.map((task) => {
    const base = `${task.handler ? "handler" : "task"}:${task.name}`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return { key: `${base}#${n}`, task };
  });
}

/** The union of every host's task columns, in play order: a column new to this host goes right
 *  after the host's previous task, or before its next known task, or at the end. */
function taskColumns(run: RunResult): Column[] {
  const order: Column[] = [];
  const at = (key: string) => order.findIndex((c) => c.key === key);
  for (const host of run.hosts) {
    const keyed = keyedTasks(host);
    keyed.forEach(({ key, task }, i) => {
      if (at(key) >= 0) return;
      const column = { key, name: task.name, handler: task.handler };
      if (i > 0) return void order.splice(at(keyed[i - 1].key) + 1, 0, column);
      const next = keyed
        .slice(1)
        .map((k) => at(k.key))
        .find((j) => j >= 0);
      order.splice(next ?? order.length, 0, column);
    });
  }
  return order;
}

function cellState(run: RunResult, host: HostResult, task: TaskResult | undefined): CellState {
  if (host.status === "unreachable") return "unreachable";
  if (!task) return host.status === "failed" && !host.tasks.length ? "failed" : "not_run";
  if (host.status === "rolled_back" && (task.status === "changed" || task.status === "failed")) return "rolled_back";
  if (task.status === "changed") return run.check ? "drift" : "changed";
  if (task.status === "skipped") return "not_run";
  return task.status;
}

function diffHtml(diff: string): string {
  const lines = diff
    .replace(/\n$/, "")
    .split("\n")
    .map((line) => {
      const cls =
        line.startsWith("+++") || line.startsWith("---")
          ? "dh"
          : line.startsWith("@@")
            ? "dk"
            : line.startsWith("+")
              ? "da"
              : line.startsWith("-")
                ? "dd"
                : line.startsWith("\\")
                  ? "dn"
                  : "dc";
      return `<span class="${cls}">${escapeHtml(line)}</span>`;
    });
  return `<pre class="diff">${lines.join("")}</pre>`;
}

/** A change the host did not confirm says so (see Outcome). */
function outcomeTag(change: ShownChange): string {
  if (change.outcome === "unknown") return ' <span class="tag outcome-unknown">unknown: sent, no answer from the host</span>';
  if (change.outcome === "not_applied") return ' <span class="tag outcome-not-applied">not applied</span>';
  return "";
}

function changeHtml(change: ShownChange): string {
  const parts = [
    `<li class="change"><div class="csum">${escapeHtml(change.summary)}${change.reboot ? ' <span class="tag">takes effect after reboot</span>' : ""}${outcomeTag(change)}</div>`,
  ];
  if (change.path) parts.push(`<div class="meta">file <code>${escapeHtml(change.path)}</code></div>`);
  if (change.command) parts.push(`<div class="meta">command <code>${escapeHtml(change.command)}</code></div>`);
  if (change.diff) parts.push(diffHtml(change.diff));
  parts.push("</li>");
  return parts.join("");
}

function detailHtml(run: RunResult, host: HostResult, column: Column, task: TaskResult | undefined, state: CellState): string {
  const out: string[] = [];
  out.push(
    `<h2><span class="hn">${escapeHtml(host.host)}</span> <span class="sep">›</span> ${column.handler ? '<span class="tag">handler</span> ' : ""}${escapeHtml(column.name)}</h2>`,
  );
  out.push(`<p class="meta"><span class="badge s-${state}">${escapeHtml(LABELS[state])}</span>`);
  if (task) out.push(` module <code>${escapeHtml(task.module)}</code>`);
  out.push(` · host ${escapeHtml(host.address)} · host ${escapeHtml(hostLabel(host))}</p>`);
  if (host.error && (state === "unreachable" || state === "rolled_back" || state === "failed" || state === "not_run"))
    out.push(`<div class="err"><strong>host error:</strong> ${escapeHtml(host.error)}</div>`);
  if (!task) {
    out.push(`<p class="empty">${state === "unreachable" ? "The host could not be reached; nothing was checked or changed." : "This task did not run on this host."}</p>`);
    return out.join("");
  }
  if (task.problems.length) out.push(`<h3>Problems</h3><ul class="problems">${task.problems.map((p) => `<li>${escapeHtml(p)}</li>`).join("")}</ul>`);
  if (task.changes.length) {
    const counts = outcomeCounts(task.changes);
    const verb = run.check ? "to make" : state === "rolled_back" ? "made, then rolled back" : "made";
    const heading =
      counts.unknown || counts.not_applied
        ? `${task.changes.length} change${task.changes.length === 1 ? "" : "s"}: ${describeOutcomes(counts)}`
        : `${task.changes.length} change${task.changes.length === 1 ? "" : "s"} ${verb}`;
    out.push(`<h3>${escapeHtml(heading)}</h3><ul class="changes">${task.changes.map(changeHtml).join("")}</ul>`);
  } else out.push(`<p class="empty">Nothing to change: the host already matches.</p>`);
  if (task.notes.length) out.push(`<h3>Notes</h3><ul class="notes">${task.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join("")}</ul>`);
  return out.join("");
}

function duration(run: RunResult): string {
  const ms = Date.parse(run.finishedAt) - Date.parse(run.startedAt);
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : "";
}

function countBy<T extends string>(values: T[]): [T, number][] {
  const counts = new Map<T, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts];
}

export function renderHtmlReport(run: RunResult): string {
  const columns = taskColumns(run);
  const mode = run.check ? "check" : "apply";
  const details: string[] = [];
  const cellStates: CellState[] = [];

  const rows = run.hosts.map((host, r) => {
    const byKey = new Map(keyedTasks(host).map(({ key, task }) => [key, task]));
    const cells = columns.map((column, c) => {
      const task = byKey.get(column.key);
      const state = cellState(run, host, task);
      cellStates.push(state);
      const id = `d-${r}-${c}`;
      details.push(`<section id="${id}">${detailHtml(run, host, column, task, state)}</section>`);
      const n = task?.changes.length ?? 0;
      const label = state === "rolled_back" && task?.status === "failed" ? "failed · rolled back" : LABELS[state];
      const count = n && state !== "ok" ? ` <span class="n">${n}</span>` : "";
      const cause = state === "rolled_back" && task?.status === "failed" ? " cause" : "";
      return `<td><button type="button" class="cell s-${state}${cause}" data-state="${state}" data-detail="${id}" data-host="${escapeHtml(host.host)}" data-task="${escapeHtml(column.name)}" title="${escapeHtml(`${host.host} › ${column.name}: ${label}`)}">${escapeHtml(label)}${count}</button></td>`;
    });
    if (!columns.length) cells.push(`<td class="empty">${escapeHtml(host.error ?? "no tasks")}</td>`);
    return `<tr data-host="${escapeHtml(host.host)}" data-status="${host.status}"><th scope="row"><span class="hn">${escapeHtml(host.host)}</span><span class="addr">${escapeHtml(host.address)}</span>${Object.entries(
      host.facts ?? {},
    )
      .map(([name, text]) => `<span class="addr" data-fact="${escapeHtml(name)}">${escapeHtml(`${name}: ${text}`)}</span>`)
      .join("")}<span class="badge s-${hostStateClass(host.status)}">${escapeHtml(hostLabel(host))}</span></th>${cells.join("")}</tr>`;
  });

  const head = `<tr><th scope="col" class="corner">host</th>${columns.map((c) => `<th scope="col">${c.handler ? '<span class="tag">handler</span> ' : ""}${escapeHtml(c.name)}</th>`).join("")}${columns.length ? "" : "<th></th>"}</tr>`;

  const hostCounts = countBy(run.hosts.map((h) => h.status))
    .map(([s, n]) => `<span class="badge s-${hostStateClass(s)}">${n} ${escapeHtml(HOST_LABELS[s])}</span>`)
    .join(" ");
  const cellCounts = countBy(cellStates)
    .map(([s, n]) => `<span class="badge s-${s}">${n} ${escapeHtml(LABELS[s])}</span>`)
    .join(" ");

  const summaryRows = run.hosts.map((host) => {
    const row = summaryRow(host);
    return `<tr data-host="${escapeHtml(host.host)}"><td>${escapeHtml(row.host)}</td><td>${escapeHtml(host.address)}</td><td><span class="badge s-${hostStateClass(host.status)}">${escapeHtml(hostLabel(host))}</span></td><td class="num">${row.ok}</td><td class="num">${row.changed}</td><td class="num">${row.failed}</td><td>${row.rolledBack}</td><td class="num">${(host.durationMs / 1000).toFixed(1)} s</td><td class="errcell">${escapeHtml(host.error ?? "")}</td></tr>`;
  });

  const title = `provision ${mode} report ${run.runId}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
</head>
<body>
<header>
  <h1>provision <span class="mode m-${mode}">${mode === "check" ? "check (audit, nothing changed)" : "apply"}</span></h1>
  <dl class="facts">
    <div><dt>run</dt><dd><code>${escapeHtml(run.runId)}</code></dd></div>
    <div><dt>started</dt><dd>${escapeHtml(run.startedAt)}</dd></div>
    <div><dt>finished</dt><dd>${escapeHtml(run.finishedAt)}</dd></div>
    <div><dt>took</dt><dd>${escapeHtml(duration(run))}</dd></div>
  </dl>
  <p class="counts" id="host-counts">${run.hosts.length} host${run.hosts.length === 1 ? "" : "s"}: ${hostCounts || "none"}</p>
  <p class="counts" id="task-counts">${cellStates.length} task result${cellStates.length === 1 ? "" : "s"}: ${cellCounts || "none"}</p>
</header>
<main>
  <p class="hint">Click a cell to see that task's changes, diffs, problems and notes.</p>
  <div class="gridwrap"><table id="grid" class="grid"><thead>${head}</thead><tbody>${rows.join("")}</tbody></table></div>
  <h2 class="sec">Summary per host</h2>
  <div class="sumwrap"><table id="summary" class="summary"><thead><tr><th>host</th><th>address</th><th>status</th><th>ok</th><th>${run.check ? "to change" : "changed"}</th><th>failed</th><th>rolled back</th><th>took</th><th>error</th></tr></thead><tbody>${summaryRows.join("")}</tbody></table></div>
</main>
<aside id="panel" class="panel" hidden aria-live="polite"><button type="button" class="close" id="close" aria-label="close">×</button><div id="panel-body"></div></aside>
<div id="details" hidden>${details.join("")}</div>
<script>${JS}</script>
</body>
</html>
`;
}

function hostStateClass(status: HostResult["status"]): CellState {
  return status === "drift" ? "drift" : status;
}

export function writeHtmlReport(file: string, run: RunResult): void {
  writeFileSync(file, renderHtmlReport(run));
}

const CSS = `
:root{--ok:#1f7a3a;--ok-bg:#e3f4e8;--ch:#8a5a00;--ch-bg:#fff1cc;--dr:#3b4fb8;--dr-bg:#e4e8ff;--fa:#b3261e;--fa-bg:#fde3e1;--rb:#8e2a8b;--rb-bg:#f7e3f6;--un:#fff;--un-bg:#5b6068;--nr:#6b7280;--nr-bg:#f1f2f4;--line:#d9dce1}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2025;background:#fafbfc}
header{padding:16px 24px 8px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0 0 8px;font-size:20px}
.mode{font-size:13px;font-weight:600;padding:2px 8px;border-radius:10px;vertical-align:middle}
.m-check{background:var(--dr-bg);color:var(--dr)}.m-apply{background:var(--ch-bg);color:var(--ch)}
.facts{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0 0 6px}.facts div{display:flex;gap:6px}.facts dt{color:#6b7280}.facts dd{margin:0}
.counts{margin:4px 0}
main{padding:12px 24px 40px}
body.open main,body.open header{margin-right:min(720px,96vw)}
@media (max-width:1100px){body.open main,body.open header{margin-right:0}}
.hint{color:#6b7280;margin:4px 0 10px}
.gridwrap{overflow:auto;max-height:70vh;border:1px solid var(--line);border-radius:6px;background:#fff}
table.grid{border-collapse:separate;border-spacing:0}
.grid th,.grid td{border-bottom:1px solid var(--line);border-right:1px solid var(--line);padding:4px}
.grid thead th{position:sticky;top:0;background:#f4f5f7;z-index:2;font-weight:600;text-align:left;min-width:120px;max-width:220px;vertical-align:bottom}
.grid tbody th{position:sticky;left:0;background:#fff;z-index:1;text-align:left;font-weight:normal;white-space:nowrap;padding:4px 10px}
.grid thead th.corner{left:0;z-index:3}
.hn{font-weight:600}.addr{color:#6b7280;margin:0 8px;font-size:12px}
.cell{display:block;width:100%;min-width:110px;border:1px solid transparent;border-radius:4px;padding:5px 8px;font:inherit;font-size:13px;text-align:left;cursor:pointer;white-space:nowrap}
.cell:hover,.cell:focus{outline:2px solid #3b82f6;outline-offset:1px}
.cell.selected{outline:3px solid #111;outline-offset:1px}
.cell .n{float:right;font-size:11px;font-weight:700;opacity:.8}
.s-ok{background:var(--ok-bg);color:var(--ok)}
.s-changed{background:var(--ch-bg);color:var(--ch);border-color:#f0c24b}
.s-drift{background:var(--dr-bg);color:var(--dr);border-color:#9aa8ef}
.s-failed{background:var(--fa-bg);color:var(--fa);border-color:#e88c86;font-weight:600}
.s-rolled_back{background:repeating-linear-gradient(135deg,var(--rb-bg) 0 8px,#fff 8px 12px);color:var(--rb);border-color:#d49ad2}
.s-rolled_back.cause{font-weight:700;border-color:var(--fa)}
.s-unreachable{background:var(--un-bg);color:var(--un)}
.s-not_run{background:var(--nr-bg);color:var(--nr)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;margin-right:2px}
.tag{display:inline-block;font-size:11px;padding:0 6px;border-radius:8px;background:#eef0f3;color:#4b5563;font-weight:600}
h2.sec{font-size:16px;margin:24px 0 8px}
table.summary{border-collapse:collapse;background:#fff;border:1px solid var(--line)}
.summary th,.summary td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left}
.summary th{background:#f4f5f7}.summary td:first-child{white-space:nowrap}.summary .num{text-align:right}.errcell{color:var(--fa);min-width:280px;max-width:560px}
.sumwrap{overflow:auto}
.panel{position:fixed;top:0;right:0;bottom:0;width:min(720px,96vw);background:#fff;border-left:1px solid var(--line);box-shadow:-6px 0 24px rgba(0,0,0,.12);overflow:auto;padding:16px 20px;z-index:10}
.panel h2{font-size:17px;margin:0 30px 6px 0}.panel h3{font-size:14px;margin:16px 0 6px}
.sep{color:#9ca3af}
.close{position:absolute;top:10px;right:12px;border:0;background:none;font-size:24px;cursor:pointer;color:#6b7280}
.panel ul{padding-left:18px;margin:4px 0}.changes{list-style:none;padding-left:0!important}
.change{border:1px solid var(--line);border-radius:6px;padding:8px 10px;margin:0 0 10px}
.csum{font-weight:600}.meta{color:#4b5563;margin:4px 0}
.err{background:var(--fa-bg);color:var(--fa);padding:6px 10px;border-radius:4px;margin:8px 0}
.problems li{color:var(--fa);font-weight:600}
.empty{color:#6b7280}
pre.diff{margin:6px 0 0;padding:8px 0;background:#f8f9fb;border:1px solid var(--line);border-radius:4px;overflow:auto;font:12px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
pre.diff span{display:block;padding:0 10px;white-space:pre}
.da{background:#e6ffec;color:#116329}.dd{background:#ffebe9;color:#82071e}.dk{color:#6639ba;background:#f3f0ff}.dh{color:#57606a;font-weight:600}.dn{color:#8c959f;font-style:italic}
`;

const JS = `
(function(){
  var panel=document.getElementById("panel"),body=document.getElementById("panel-body"),current=null;
  function open(cell){
    var d=document.getElementById(cell.getAttribute("data-detail"));
    if(!d)return;
    if(current)current.classList.remove("selected");
    current=cell;cell.classList.add("selected");
    body.replaceChildren(d.cloneNode(true));
    body.firstChild.removeAttribute("id");
    panel.hidden=false;panel.scrollTop=0;document.body.classList.add("open");
  }
  function close(){panel.hidden=true;document.body.classList.remove("open");if(current){current.classList.remove("selected");current.focus();current=null;}}
  document.getElementById("grid").addEventListener("click",function(e){
    var cell=e.target.closest("button.cell");if(cell)open(cell);
  });
  document.getElementById("close").addEventListener("click",close);
  document.addEventListener("keydown",function(e){if(e.key==="Escape"&&!panel.hidden)close();});
})();
`;
