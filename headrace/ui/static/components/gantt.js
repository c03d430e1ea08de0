// The Gantt chart of an execution's task runs: one row per task run (nested runs under
// their parent, for-each values shown), a bar from its start to its end coloured by its
// state, its attempts as segments inside the bar, a time axis relative to the start.
// Running bars grow live. Hovering or focusing a row shows its exact times; clicking
// (or Enter on) a row selects it.
//
// const gantt = createGantt({onSelect(run | null)}); container.append(gantt.element);
// gantt.update(execution) at each change; gantt.select(taskRunId | null); gantt.stop().

import { TERMINAL_STATES, clear, formatDuration, h } from "../dom.js";

// Axis steps, in ms: the first one giving at most MAX_TICKS ticks is used.
const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3];
const MAX_TICKS = 8;
const LIVE_MS = 500;

let ganttCount = 0;

export function createGantt({ onSelect = () => {} } = {}) {
  const uid = `gantt-${++ganttCount}`;
  const ticks = h("div", { class: "gantt-ticks", "aria-hidden": "true" });
  const axisStart = h("div", { class: "gantt-axis-start" });
  const rows = h("ul", { class: "gantt-rows", "aria-label": "Task runs, in execution order" });
  const tip = h("div", { class: "gantt-tip", id: `${uid}-tip`, role: "tooltip" });
  const grid = h("div", { class: "gantt-grid" }, h("div", { class: "gantt-axis" }, axisStart, ticks, h("div", { "aria-hidden": "true" })), rows);
  const empty = h("p", { class: "gantt-empty" }, "No task run yet.");
  const element = h("div", { class: "gantt" }, empty, grid, tip, legend());
  let execution = null;
  let selected = null;
  let timer = null;
  const rowsById = new Map();

  const range = () => {
    const runs = execution.taskRunList || [];
    const starts = [time(execution.state?.startDate) ?? time(execution.createdAt), ...runs.map((r) => time(r.state?.startDate))].filter((t) => t !== null);
    const t0 = Math.min(...starts);
    const ended = TERMINAL_STATES.has(execution.state?.current);
    const ends = runs.map((r) => time(r.state?.endDate) ?? (ended ? null : Date.now())).filter((t) => t !== null);
    const t1 = Math.max(t0 + 1, time(execution.state?.endDate) ?? (ended ? t0 : Date.now()), ...ends);
    return { t0, t1 };
  };

  const layout = () => {
    if (!execution) return;
    const { t0, t1 } = range();
    const step = STEPS.find((s) => (t1 - t0) / s <= MAX_TICKS) || STEPS.at(-1);
    const tickMarks = [];
    for (let t = 0; t <= t1 - t0; t += step) {
      tickMarks.push(h("span", { class: `gantt-tick${t === 0 ? " first" : ""}`, style: `left:${pct(t, t1 - t0)}` }, t === 0 ? "0" : formatOffset(t, step)));
    }
    clear(ticks, tickMarks);
    axisStart.textContent = `Started ${clock(t0)}`;
    element.style.setProperty("--gantt-grid", pct(step, t1 - t0));
    for (const row of rowsById.values()) placeBar(row, t0, t1);
  };

  // The row whose tip is shown: its text follows the run's state (update, tick).
  let tipRow = null;
  const showTip = (row, anchor) => {
    tipRow = row;
    tip.textContent = describe(row.run);
    tip.classList.add("shown");
    const box = element.getBoundingClientRect();
    const target = anchor.getBoundingClientRect();
    const top = target.bottom - box.top + 4;
    const left = Math.min(Math.max(0, target.left - box.left), Math.max(0, box.width - tip.offsetWidth));
    tip.style.top = `${top}px`;
    tip.style.left = `${left}px`;
  };
  const hideTip = () => {
    tipRow = null;
    tip.classList.remove("shown");
  };
  const refreshTip = () => {
    if (tipRow && rowsById.get(tipRow.run.id) === tipRow) tip.textContent = describe(tipRow.run);
    else if (tipRow) hideTip();
  };

  const makeRow = (run) => {
    const name = h("button", { type: "button", class: "gantt-name", "aria-pressed": "false", "aria-describedby": tip.id });
    const bar = h("div", { class: "gantt-bar" });
    const track = h("div", { class: "gantt-track", "aria-hidden": "true" }, bar);
    const took = h("div", { class: "gantt-duration" });
    const element = h("li", { class: "gantt-row" }, name, track, took);
    const row = { element, name, bar, track, took, run };
    name.addEventListener("click", () => onSelect(selected === row.run.id ? null : row.run));
    track.addEventListener("click", () => onSelect(selected === row.run.id ? null : row.run));
    const anchor = () => (row.bar.hidden ? track : row.bar);
    name.addEventListener("focus", () => showTip(row, anchor()));
    name.addEventListener("blur", hideTip);
    for (const part of [name, track]) {
      part.addEventListener("mouseenter", () => showTip(row, anchor()));
      part.addEventListener("mouseleave", () => {
        if (document.activeElement !== name) hideTip();
      });
    }
    return row;
  };

  const fillRow = (row, run, depth) => {
    row.run = run;
    const state = run.state?.current || "CREATED";
    row.element.dataset.state = state;
    row.element.dataset.taskRunId = run.id;
    row.element.dataset.taskId = run.taskId;
    const value = run.value === null || run.value === undefined ? null : typeof run.value === "string" ? run.value : JSON.stringify(run.value);
    clear(
      row.name,
      depth ? h("span", { class: "twig", "aria-hidden": "true" }, "└") : null,
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "task-id" }, run.taskId),
      value !== null ? h("span", { class: "value", title: value }, value) : null,
    );
    row.name.style.paddingLeft = `${4 + depth * 18}px`;
    row.name.setAttribute("aria-label", `${run.taskId}${value !== null ? ` (${value})` : ""}: ${state}`);
    const attempts = run.attempts || [];
    row.bar.classList.toggle("flowable", attempts.length === 0);
    row.bar.classList.toggle("running", !TERMINAL_STATES.has(state));
    // A pause's attempt stays RUNNING while its task run is PAUSED: show it paused.
    const attemptState = (attempt) => {
      const current = attempt.state?.current || "RUNNING";
      return current === "RUNNING" && state === "PAUSED" ? "PAUSED" : current;
    };
    clear(row.bar, attempts.map((attempt) => h("span", { class: "gantt-attempt", dataset: { state: attemptState(attempt) } })));
  };

  const update = (next) => {
    execution = next;
    const ordered = treeOrder(execution.taskRunList || []);
    const seen = new Set();
    ordered.forEach(({ run, depth }, index) => {
      let row = rowsById.get(run.id);
      if (!row) {
        row = makeRow(run);
        rowsById.set(run.id, row);
      }
      fillRow(row, run, depth);
      seen.add(run.id);
      if (rows.children[index] !== row.element) rows.insertBefore(row.element, rows.children[index] || null);
    });
    for (const [id, row] of rowsById) {
      if (!seen.has(id)) {
        row.element.remove();
        rowsById.delete(id);
      }
    }
    empty.hidden = ordered.length > 0;
    grid.hidden = ordered.length === 0;
    markSelected();
    layout();
    refreshTip();
    const live = !TERMINAL_STATES.has(execution.state?.current);
    if (live && !timer) timer = setInterval(() => { layout(); refreshTip(); }, LIVE_MS);
    if (!live && timer) stop();
  };

  const markSelected = () => {
    for (const row of rowsById.values()) {
      const on = row.run.id === selected;
      row.element.classList.toggle("selected", on);
      row.name.setAttribute("aria-pressed", String(on));
    }
  };

  const stop = () => {
    clearInterval(timer);
    timer = null;
  };

  return {
    element,
    update,
    stop,
    select(taskRunId) {
      selected = taskRunId;
      markSelected();
    },
  };
}

// Parents first, each followed by its children (in the order the execution made them).
function treeOrder(runs) {
  const known = new Set(runs.map((r) => r.id));
  const children = new Map();
  for (const run of runs) {
    const parent = run.parentTaskRunId && known.has(run.parentTaskRunId) ? run.parentTaskRunId : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(run);
  }
  const ordered = [];
  const walk = (parent, depth) => {
    for (const run of children.get(parent) || []) {
      ordered.push({ run, depth });
      walk(run.id, depth + 1);
    }
  };
  walk(null, 0);
  return ordered;
}

function placeBar(row, t0, t1) {
  const { run } = row;
  const start = time(run.state?.startDate);
  const state = run.state?.current;
  const live = !TERMINAL_STATES.has(state);
  const span = t1 - t0;
  if (start === null) {
    row.bar.hidden = true;
    row.took.textContent = state === "CREATED" ? "waiting" : "—";
    return;
  }
  row.bar.hidden = false;
  const end = time(run.state?.endDate) ?? (live ? Math.min(Date.now(), t1) : start);
  row.bar.style.left = pct(start - t0, span);
  row.bar.style.width = pct(Math.max(end - start, 0), span);
  row.took.textContent = formatDuration(end - start);
  const attempts = run.attempts || [];
  [...row.bar.children].forEach((segment, index) => {
    const attempt = attempts[index]?.state || {};
    const from = time(attempt.startDate) ?? start;
    const to = time(attempt.endDate) ?? (TERMINAL_STATES.has(attempt.current) ? from : Math.max(from, end));
    const length = Math.max(end - start, 1);
    segment.style.left = pct(from - start, length);
    segment.style.width = pct(Math.max(to - from, 0), length);
  });
}

// The tooltip's text: exact times, duration, each attempt.
function describe(run) {
  const state = run.state || {};
  const start = time(state.startDate);
  const end = time(state.endDate);
  const lines = [`${run.taskId}${run.value !== null && run.value !== undefined ? ` (${typeof run.value === "string" ? run.value : JSON.stringify(run.value)})` : ""}  ·  ${state.current}`];
  lines.push(`Started   ${start === null ? "not yet" : exact(start)}`);
  lines.push(`Ended     ${end === null ? (start === null ? "—" : "still running") : exact(end)}`);
  if (start !== null) lines.push(`Duration  ${formatDuration((end ?? Date.now()) - start)}`);
  (run.attempts || []).forEach((attempt, index) => {
    const a = attempt.state || {};
    const from = time(a.startDate);
    const to = time(a.endDate);
    const took = from === null ? "" : ` ${formatDuration((to ?? Date.now()) - from)}`;
    lines.push(`Attempt ${index + 1}: ${a.current}${took}${attempt.error ? ` — ${attempt.error}` : ""}`);
  });
  return lines.join("\n");
}

function legend() {
  const item = (state, text) => h("span", {}, h("i", { dataset: { state } }), text);
  return h(
    "div",
    { class: "gantt-legend", "aria-hidden": "true" },
    item("SUCCESS", "success"),
    item("FAILED", "failed"),
    item("RUNNING", "running"),
    item("PAUSED", "paused"),
    item("KILLED", "killed"),
    h("span", {}, h("i", { class: "span" }), "task run, outside its attempts (waits, retries, children)"),
  );
}

function time(value) {
  if (!value) return null;
  const t = new Date(value).getTime();
  return Number.isNaN(t) ? null : t;
}

function pct(part, whole) {
  return `${((part / whole) * 100).toFixed(3)}%`;
}

function clock(t) {
  return new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function exact(t) {
  const date = new Date(t);
  const day = date.toLocaleDateString(undefined, { dateStyle: "medium" });
  const hours = date.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return `${day} ${hours}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

// An axis label: "+250 ms", "+1.5 s", "+2 min", "+1 h 30 min" depending on the step.
function formatOffset(ms, step) {
  if (step < 1000) return `${ms >= 1000 ? (ms / 1000).toFixed(step < 100 ? 2 : 1) + " s" : `${ms} ms`}`;
  if (step < 60_000) return `${ms / 1000} s`;
  if (step < 3_600_000) return `${ms / 60_000} min`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.round((ms % 3_600_000) / 60_000);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}
