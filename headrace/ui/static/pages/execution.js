// One execution, live (/ui/executions/{id}): its state, times, trigger, labels, inputs and
// outputs; the Gantt chart of its task runs (or its flow's topology coloured by their
// states); its logs; and the commands its state allows (kill, restart, replay, resume).
//
// Shown from `GET /executions/{id}/follow` (SSE: the execution, then at each change the
// execution with the task runs that changed) until it ends; after a restart or a resume
// the page follows it again.

import { api, follow, READ_ONLY, whoAmI } from "../api.js";
import { createGantt } from "../components/gantt.js";
import { inputForm } from "../components/input_form.js";
import { createLogs } from "../components/logs.js";
import { clear, duration, errorBox, flowHref, formatDate, formatDuration, h, sleep, stateBadge, TERMINAL_STATES, toast } from "../dom.js";

const KILLABLE = new Set(["CREATED", "QUEUED", "RUNNING", "PAUSED", "RETRYING"]);
const RESTARTABLE = new Set(["FAILED", "KILLED"]);
// When the page asks for the execution itself, had the follow stream not shown it yet.
const FALLBACK_GET_MS = 3000;
// After a restart or resume, how long the page keeps following an execution the index
// still shows ended (the executor's change reaches the index a moment later).
const EXPECT_CHANGE_MS = 15_000;

export async function render(main, params, ctx) {
  ctx.setTitle(`Execution ${params.id.slice(0, 8)}`);
  main.append(h("p", { class: "muted" }, "Loading execution…"));
  new ExecutionPage(main, params.id, ctx).start();
}

class ExecutionPage {
  constructor(main, id, ctx) {
    this.main = main;
    this.ctx = ctx;
    this.signal = ctx.signal;
    this.id = id;
    this.shown = false;
    this.failed = false; // the stream said the execution does not exist
    this.runs = new Map();
    this.execution = null;
    this.selected = null; // the task run whose logs are shown
    this.expectChangeUntil = 0;
    this.readOnly = false; // a reader's token: the actions are disabled
    whoAmI().then((who) => {
      this.readOnly = who?.role === "reader";
      if (this.readOnly && this.execution) this.refresh();
    });
    this.watching = false;
    this.flow = undefined; // the flow at the execution's revision, loaded when needed
    this.topology = null;
  }

  // The follow stream's first event shows the page. The stream waits for an execution
  // the index does not know yet (just started or replayed) where a GET would say 404;
  // a GET after a moment still shows the page if the stream cannot (no change feed).
  start() {
    this.watch();
    sleep(FALLBACK_GET_MS, this.signal).then(async () => {
      if (this.shown || this.failed || this.signal.aborted) return;
      try {
        this.receive(await api(`executions/${encodeURIComponent(this.id)}`, { signal: this.signal }));
      } catch {
        // not indexed yet: the stream shows it when it is, or says why not
      }
    });
  }

  receive(execution) {
    if (this.signal.aborted) return;
    const wasEnded = TERMINAL_STATES.has(this.execution?.state?.current);
    this.merge(execution);
    if (!this.shown) return this.show();
    this.refresh();
    // Running again (restarted, resumed, by anyone): its log stream had ended.
    if (wasEnded && !TERMINAL_STATES.has(execution.state?.current)) this.logs.follow();
  }

  // An event of the follow stream: the execution, with the task runs that changed.
  merge(execution) {
    for (const run of execution.taskRunList || []) this.runs.set(run.id, run);
    this.execution = { ...execution, taskRunList: [...this.runs.values()] };
    if (!TERMINAL_STATES.has(execution.state?.current)) this.expectChangeUntil = 0;
  }

  show() {
    this.shown = true;
    const e = this.execution;
    this.ctx.setTitle(`${e.flowId} ${e.id.slice(0, 8)}`);
    this.stateBadge = h("span", { "data-testid": "execution-state", class: "state", role: "status" });
    this.buttons = {
      kill: h("button", { type: "button", class: "danger", onclick: () => this.confirmKill() }, "Kill"),
      restart: h("button", { type: "button", onclick: () => this.restart() }, "Restart"),
      replay: h("button", { type: "button", onclick: () => this.replay() }, "Replay"),
      resume: h("button", { type: "button", onclick: () => this.openResume() }, "Resume"),
    };
    this.details = h("dl", { class: "kv" });
    this.inputs = h("div", {});
    this.outputs = h("div", {});
    this.gantt = createGantt({ onSelect: (run) => this.select(run) });
    this.selectionBar = h("div", { class: "selection-bar", hidden: true });
    this.logs = createLogs(this.id, { signal: this.signal, onClearTaskRun: () => this.select(null), level: this.ctx.query.get("level") || undefined });
    const flowLink = flowHref(e.namespace, e.flowId);

    clear(
      this.main,
      h("div", { class: "exec-page" },
        h("nav", { class: "exec-crumbs", "aria-label": "Breadcrumb" },
          h("a", { href: "/ui/executions" }, "Executions"), " / ",
          h("a", { href: `/ui/executions?namespace=${encodeURIComponent(e.namespace)}` }, e.namespace), " / ",
          h("a", { href: `/ui/executions?namespace=${encodeURIComponent(e.namespace)}&flowId=${encodeURIComponent(e.flowId)}` }, e.flowId)),
        h("div", { class: "page-head exec-head" },
          h("h1", {}, h("a", { href: flowLink, class: "flow-link" }, e.flowId), " ", h("span", { class: "exec-id", title: "Execution id" }, e.id)),
          this.stateBadge,
          h("span", { class: "spacer" }),
          h("div", { class: "exec-actions" }, this.buttons.resume, this.buttons.restart, this.buttons.replay, this.buttons.kill)),
        h("div", { class: "exec-overview" },
          section("Details", "card", this.details),
          section("Inputs", "card", this.inputs),
          section("Outputs", "card", this.outputs)),
        this.taskRunsPanel(),
        section("Logs", "card exec-panel", this.logs.element),
      ),
    );
    this.refresh();
    this.ticker = setInterval(() => this.tick(), 1000);
    this.signal.addEventListener("abort", () => {
      clearInterval(this.ticker);
      this.gantt.stop();
    });
  }

  taskRunsPanel() {
    const timelineTab = h("button", { type: "button", role: "tab", id: "tr-tab-timeline", "aria-selected": "true", "aria-controls": "tr-panel-timeline" }, "Timeline");
    const topologyTab = h("button", { type: "button", role: "tab", id: "tr-tab-topology", "aria-selected": "false", "aria-controls": "tr-panel-topology", tabindex: "-1" }, "Topology");
    const timeline = h("div", { role: "tabpanel", id: "tr-panel-timeline", "aria-labelledby": timelineTab.id }, this.gantt.element, this.selectionBar);
    this.topologyBox = h("div", { role: "tabpanel", id: "tr-panel-topology", "aria-labelledby": topologyTab.id, class: "topology-box", hidden: true });
    const tabs = [timelineTab, topologyTab];
    const pick = (tab) => {
      for (const t of tabs) {
        const on = t === tab;
        t.setAttribute("aria-selected", String(on));
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      }
      if (tab === topologyTab) this.showTopology();
    };
    for (const tab of tabs) {
      tab.addEventListener("click", () => pick(tab));
      tab.addEventListener("keydown", (event) => {
        if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
        const other = tabs[(tabs.indexOf(tab) + 1) % tabs.length];
        pick(other);
        other.focus();
      });
    }
    const headingId = `section-${++sectionCount}`;
    const box = h(
      "section",
      { class: "card exec-panel", "aria-labelledby": headingId },
      h("div", { class: "panel-head" }, h("h2", { id: headingId }, "Task runs"), h("span", { class: "spacer" }), h("div", { role: "tablist", "aria-label": "Task runs view" }, tabs)),
      timeline,
      this.topologyBox,
    );
    return box;
  }

  // ------------------------------------------------------------------ rendering

  refresh() {
    const e = this.execution;
    const state = e.state?.current || "CREATED";
    this.stateBadge.className = `state state-${state.toLowerCase()}`;
    this.stateBadge.textContent = state;
    const reader = this.readOnly;
    this.buttons.kill.disabled = reader || !KILLABLE.has(state);
    this.buttons.restart.disabled = reader || !RESTARTABLE.has(state);
    this.buttons.replay.disabled = reader || !TERMINAL_STATES.has(state);
    this.buttons.resume.disabled = reader || state !== "PAUSED";
    for (const button of Object.values(this.buttons)) if (reader) button.title = READ_ONLY;
    this.buttons.resume.classList.toggle("primary", state === "PAUSED");
    this.renderDetails();
    clear(this.inputs, values(e.inputs, "No inputs."));
    clear(this.outputs, values(e.outputs, TERMINAL_STATES.has(state) ? "No flow outputs." : "None yet."), taskOutputs(e.taskRunList));
    this.gantt.update(e);
    if (this.selected) {
      this.selected = this.runs.get(this.selected.id) || null;
      this.renderSelection();
    }
    this.updateTopology();
  }

  renderDetails() {
    const e = this.execution;
    const s = e.state || {};
    const flowLink = flowHref(e.namespace, e.flowId);
    this.durationText = h("span", {}, formatDuration(duration(s.startDate || e.createdAt, s.endDate)));
    clear(
      this.details,
      row("Flow", h("span", {}, h("a", { href: flowLink }, `${e.namespace} / ${e.flowId}`), h("span", { class: "muted" }, ` · revision ${e.flowRevision}`))),
      row("Created", formatDate(e.createdAt)),
      row("Started", formatDate(s.startDate)),
      row("Ended", s.endDate ? formatDate(s.endDate) : h("span", { class: "muted" }, TERMINAL_STATES.has(s.current) ? "—" : "not yet")),
      row("Duration", this.durationText),
      row("Trigger", triggerText(e.trigger)),
      row("Labels", Object.keys(e.labels || {}).length ? Object.entries(e.labels).map(([k, v]) => h("span", { class: "badge label-badge" }, `${k}:${v}`)) : h("span", { class: "muted" }, "none")),
      row("History", history(s.histories || [])),
    );
  }

  tick() {
    const s = this.execution.state || {};
    if (!s.endDate && this.durationText) this.durationText.textContent = formatDuration(duration(s.startDate || this.execution.createdAt, null));
  }

  select(run) {
    this.selected = run;
    this.gantt.select(run?.id || null);
    this.topology?.select?.(run?.taskId ?? null);
    this.logs.setTaskRun(run);
    this.renderSelection();
  }

  renderSelection() {
    const run = this.selected;
    this.selectionBar.hidden = !run;
    if (!run) return clear(this.selectionBar);
    const ended = TERMINAL_STATES.has(this.execution.state?.current);
    const value = run.value === null || run.value === undefined ? "" : ` (${typeof run.value === "string" ? run.value : JSON.stringify(run.value)})`;
    const took = duration(run.state?.startDate, run.state?.endDate);
    const attempts = (run.attempts || []).length;
    const replay = h("button", { type: "button", disabled: !ended, title: ended ? "A new execution that keeps what ran before this task run" : "The execution must have ended" }, "Replay from here");
    replay.addEventListener("click", () => this.replay(run));
    const child = run.outputs?.executionId;
    const hasOutputs = run.outputs && Object.keys(run.outputs).length > 0;
    const errors = (run.attempts || []).map((a, i) => (a.error ? `attempt ${i + 1}: ${a.error}` : null)).filter(Boolean);
    const close = h("button", { type: "button", class: "link" }, "Show every task");
    close.addEventListener("click", () => this.select(null));
    clear(
      this.selectionBar,
      h("span", { class: "mono" }, `${run.taskId}${value}`),
      stateBadge(run.state?.current || "CREATED"),
      h("span", { class: "muted" }, took === null ? "not started" : formatDuration(took)),
      h("span", { class: "muted" }, `${attempts} ${attempts === 1 ? "attempt" : "attempts"}`),
      errors.length ? h("span", { class: "error-text" }, errors.at(-1)) : null,
      child ? h("a", { href: `/ui/executions/${encodeURIComponent(child)}` }, "Subflow execution") : null,
      h("span", { class: "spacer" }),
      replay,
      close,
      hasOutputs ? h("details", {}, h("summary", {}, "Outputs of this task run"), h("pre", { class: "code" }, JSON.stringify(run.outputs, null, 2))) : null,
    );
  }

  // ------------------------------------------------------------------ live updates

  async watch() {
    if (this.watching) return;
    this.watching = true;
    try {
      for (;;) {
        await follow(`executions/${encodeURIComponent(this.id)}/follow`, {
          signal: this.signal,
          onEvent: (name, data) => {
            if (name === "execution" && data) this.receive(data);
          },
        });
        if (this.signal.aborted || Date.now() >= this.expectChangeUntil) break;
        await sleep(700, this.signal); // restarted or resumed: the index has not seen it yet
      }
    } catch (error) {
      if (this.signal.aborted) return;
      this.failed = !this.shown;
      if (!this.shown) clear(this.main, h("h1", {}, "Execution"), errorBox(error), h("p", {}, h("a", { href: "/ui/executions" }, "All executions")));
      else toast(`Live updates stopped: ${error.message}`, "error");
    } finally {
      this.watching = false;
    }
  }

  // After a command that makes an ended execution run again.
  followAgain() {
    this.expectChangeUntil = Date.now() + EXPECT_CHANGE_MS;
    this.watch();
  }

  // ------------------------------------------------------------------ commands

  async command(kind, options = {}) {
    const button = this.buttons[kind];
    if (button) button.disabled = true;
    try {
      const answer = await api(`executions/${encodeURIComponent(this.id)}/${kind}`, { method: "POST", ...options, signal: this.signal });
      toast(outcome(kind, answer));
      return answer;
    } catch (error) {
      if (!this.signal.aborted) toast(error.message, "error");
      return null;
    } finally {
      if (!this.signal.aborted) this.refresh();
    }
  }

  confirmKill() {
    const e = this.execution;
    const confirm = h("button", { type: "button", class: "danger primary" }, "Kill execution");
    const cancel = h("button", { type: "button", autofocus: true }, "Cancel");
    const dialog = modal(
      `Kill ${e.flowId}`,
      h("p", {}, "Its running tasks are stopped and it ends ", h("strong", {}, "KILLED"), ". You can restart it afterwards."),
      h("div", { class: "actions" }, cancel, confirm),
    );
    cancel.addEventListener("click", () => dialog.close());
    confirm.addEventListener("click", async () => {
      dialog.close();
      await this.command("kill");
    });
    this.main.append(dialog);
    dialog.showModal();
  }

  async restart() {
    const answer = await this.command("restart");
    if (answer) this.followAgain();
  }

  async replay(run = null) {
    const answer = await this.command("replay", { query: run ? { taskRunId: run.id } : undefined });
    if (answer?.id) this.ctx.navigate(`/ui/executions/${encodeURIComponent(answer.id)}`);
  }

  async openResume() {
    const paused = [...this.runs.values()].find((run) => run.state?.current === "PAUSED");
    const declared = paused ? await this.pauseInputs(paused.taskId) : null;
    if (this.signal.aborted) return;
    // Without `onResume`, a pause keeps whatever the resume gives: one JSON object.
    const free = !declared?.length;
    const inputs = free ? [{ id: "inputs", type: "JSON", required: false, displayName: "Inputs", description: 'Optional: a JSON object the pause keeps as its outputs, e.g. {"approved": true}' }] : declared;
    let dialog = null;
    const form = inputForm(inputs, {
      submitLabel: "Resume execution",
      onSubmit: async (given) => {
        const body = free ? given.inputs ?? {} : given;
        if (free && (typeof body !== "object" || Array.isArray(body) || body === null)) throw new Error("Inputs: give a JSON object");
        const answer = await api(`executions/${encodeURIComponent(this.id)}/resume`, { method: "POST", body, signal: this.signal });
        dialog.close();
        toast(outcome("resume", answer));
        this.followAgain();
      },
    });
    const cancel = h("button", { type: "button", class: "link" }, "Cancel");
    form.querySelector(".actions")?.append(cancel);
    dialog = modal(`Resume ${this.execution.flowId}`, paused ? h("p", { class: "muted" }, "Paused at ", h("strong", { class: "mono" }, paused.taskId), ".") : null, form);
    cancel.addEventListener("click", () => dialog.close());
    this.main.append(dialog);
    dialog.showModal();
  }

  // The `onResume` inputs of the pause `taskId` in the flow at the execution's revision.
  async pauseInputs(taskId) {
    const flow = await this.loadFlow();
    const task = flow && findTask(flow, taskId);
    return task?.onResume || [];
  }

  async loadFlow() {
    if (this.flow !== undefined) return this.flow;
    const e = this.execution;
    try {
      this.flow = await api(`flows/${encodeURIComponent(e.namespace)}/${encodeURIComponent(e.flowId)}`, { query: { revision: e.flowRevision }, signal: this.signal });
    } catch {
      this.flow = null; // deleted since: the page works without it
    }
    return this.flow;
  }

  // ------------------------------------------------------------------ topology

  async showTopology() {
    if (this.topology) return this.updateTopology();
    clear(this.topologyBox, h("p", { class: "muted" }, "Loading the flow…"));
    const flow = await this.loadFlow();
    if (this.signal.aborted) return;
    if (!flow) return clear(this.topologyBox, h("p", { class: "muted" }, "The flow of this execution is no longer stored."));
    let renderTopology;
    try {
      ({ renderTopology } = await import("../components/topology.js"));
    } catch {
      return clear(this.topologyBox, h("p", { class: "muted" }, "The topology view is not available."));
    }
    clear(this.topologyBox);
    try {
      // A node selects the task's (first) run, as a click on its Gantt row does.
      const onSelect = (taskId) => {
        const run = [...this.runs.values()].find((r) => r.taskId === taskId);
        this.select(run && run.id !== this.selected?.id ? run : null);
      };
      this.topology = renderTopology(this.topologyBox, flow, { states: this.taskStates(), onSelect });
      this.topology.select?.(this.selected?.taskId ?? null);
    } catch (error) {
      clear(this.topologyBox, errorBox(error));
    }
  }

  // One state per task id (a for-each runs a task many times: the most telling one).
  taskStates() {
    const states = {};
    for (const run of this.runs.values()) states[run.taskId] = worst(states[run.taskId], run.state?.current);
    return states;
  }

  updateTopology() {
    if (!this.topology || this.topologyBox.hidden) return;
    const states = this.taskStates();
    const key = JSON.stringify(states);
    if (key === this.topologyKey) return;
    this.topologyKey = key;
    this.topology.setStates?.(states);
  }
}

// ------------------------------------------------------------------ helpers

let sectionCount = 0;

// A titled section: a landmark region named by its heading.
function section(title, className, ...children) {
  const id = `section-${++sectionCount}`;
  return h("section", { class: className, "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

function modal(label, ...children) {
  const dialog = h("dialog", { class: "exec-dialog", "aria-label": label }, h("h2", {}, label), ...children);
  dialog.addEventListener("close", () => dialog.remove());
  return dialog;
}

function row(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

// Inputs or outputs: one line per key, values as text or indented JSON.
// What each task run gave (as `headrace execution start --wait` prints them), under the
// flow's own outputs: one entry per task run that has any.
function taskOutputs(runs) {
  const given = (runs || []).filter((run) => run.outputs && Object.keys(run.outputs).length);
  if (!given.length) return null;
  return h(
    "div",
    { class: "task-outputs" },
    h("h3", {}, "Task outputs"),
    given.map((run) => [h("h4", {}, run.taskId, run.value !== null && run.value !== undefined ? ` (${run.value})` : ""), values(run.outputs, "")]),
  );
}

function values(object, emptyText) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("p", { class: "muted" }, emptyText);
  return h(
    "dl",
    { class: "values" },
    entries.map(([key, value]) => [
      h("dt", {}, key),
      h("dd", {}, value !== null && typeof value === "object" ? h("pre", {}, JSON.stringify(value, null, 2)) : value === null ? h("span", { class: "muted" }, "null") : String(value)),
    ]),
  );
}

function triggerText(trigger) {
  if (!trigger?.type) return "—";
  const link = (id, text) => h("a", { href: `/ui/executions/${encodeURIComponent(id)}` }, text);
  switch (trigger.type) {
    case "subflow":
      return trigger.parentExecutionId ? h("span", {}, "subflow of ", link(trigger.parentExecutionId, `${trigger.parentFlowId || "its parent"} ${trigger.parentExecutionId.slice(0, 8)}`)) : "subflow";
    case "flow":
      return trigger.executionId ? h("span", {}, `flow trigger ${trigger.id || ""}, after `, link(trigger.executionId, `${trigger.flowId || ""} ${trigger.executionId.slice(0, 8)}`)) : "flow";
    case "replay":
      return trigger.executionId ? h("span", {}, "replay of ", link(trigger.executionId, trigger.executionId.slice(0, 8))) : "replay";
    case "schedule":
      return `schedule ${trigger.id || ""}${trigger.date ? `, for ${formatDate(trigger.date)}` : ""}`;
    default:
      return trigger.id ? `${trigger.type} ${trigger.id}` : trigger.type;
  }
}

function history(histories) {
  if (!histories.length) return "—";
  const items = histories.map((item, index) => [index ? h("span", { class: "muted", "aria-hidden": "true" }, " → ") : null, h("span", { title: formatDate(item.date) }, item.state)]);
  return h("span", { class: "history" }, items);
}

function outcome(kind, answer) {
  const verb = kind[0].toUpperCase() + kind.slice(1);
  if (!answer) return `${verb} sent`;
  if (answer.outcome === "PENDING") return `${verb} sent: ${answer.message || "the executor applies it when it gets to it"}`;
  if (kind === "replay") return `Replay started: ${answer.id}`;
  return `${verb} applied${answer.state ? `: the execution is ${answer.state}` : ""}`;
}

// The task with this id anywhere in the flow (tasks, branches, errors, finally…).
function findTask(node, taskId) {
  if (Array.isArray(node)) {
    for (const item of node) {
      const found = findTask(item, taskId);
      if (found) return found;
    }
  } else if (node && typeof node === "object") {
    if (node.id === taskId && typeof node.type === "string") return node;
    for (const [key, value] of Object.entries(node)) {
      if (key === "inputs" || key === "onResume" || key === "triggers") continue; // ids too
      const found = findTask(value, taskId);
      if (found) return found;
    }
  }
  return null;
}

// States from the least to the most telling, for a task run many times.
const SEVERITY = ["SKIPPED", "SUCCESS", "CREATED", "QUEUED", "WARNING", "RUNNING", "RETRYING", "PAUSED", "KILLING", "CANCELLED", "KILLED", "FAILED"];
function worst(a, b) {
  if (!a) return b;
  return SEVERITY.indexOf(b) > SEVERITY.indexOf(a) ? b : a;
}
