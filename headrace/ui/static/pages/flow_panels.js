// The flow page's tabs besides the editor: Topology (components/topology.js), Revisions
// (pick two, see their diff, restore one into the editor), Triggers (what starts the flow,
// when next, an on/off switch each, and a Backfill dialog per schedule) and Executions
// (the flow's last 20, refreshed while shown). Each takes the tab's panel and the page's
// state (`page.saved` is the flow as `GET /api/v1/flows/{ns}/{id}` answers it,
// `page.readOnly` is true for a reader's token).
//
// Also the pieces flow.js shares: `yamlDiff` (the one side-by-side YAML diff, used by the
// Revisions tab and by "Review changes"), `diffCounts` and `modal`.

import { api, READ_ONLY } from "../api.js";
import { clear, duration, errorBox, flowPath, formatDate, formatDuration, h, relativeTime, sleep, stateBadge, TERMINAL_STATES, toast } from "../dom.js";
import { MergeView } from "@codemirror/merge";
import { yaml } from "@codemirror/lang-yaml";
import { defaultHighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { EditorState } from "@codemirror/state";
import { EditorView, lineNumbers } from "@codemirror/view";

const EXECUTIONS_SHOWN = 20;
const EXECUTIONS_REFRESH_MS = 3000;
const TRIGGERS_REFRESH_MS = 15000;
const BACKFILL_LISTED = 10; // execution links shown after a backfill
// The title of what a reader's token may not use (GET /api/v1/me says "reader").

function notSavedYet(panel, what) {
  clear(panel, h("div", { class: "card empty" }, h("p", {}, `Save the flow to see its ${what}.`)));
}

function when(value) {
  if (!value) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: value, title: formatDate(value) }, relativeTime(value));
}

// --- Topology -------------------------------------------------------------------------

export async function topologyPanel(panel, page) {
  if (!page.saved) return notSavedYet(panel, "topology");
  let renderTopology;
  try {
    ({ renderTopology } = await import("../components/topology.js"));
  } catch {
    clear(panel, h("div", { class: "card empty" }, h("p", {}, "The topology view is not available in this build.")));
    return;
  }
  const note = h("p", { class: "muted topology-note" }, `Revision ${page.saved.revision} as saved; save to see changes made in the editor.`);
  const canvas = h("div", { class: "topology-host" });
  clear(panel, note, canvas);
  try {
    renderTopology(canvas, page.saved);
  } catch (error) {
    clear(canvas, errorBox(error));
  }
}

// --- Revisions ------------------------------------------------------------------------

export async function revisionsPanel(panel, page, { signal, restore }) {
  if (!page.saved) return notSavedYet(panel, "revisions");
  const flow = page.saved;
  const revisions = (await api(`flows/${flowPath(flow.namespace, flow.id)}/revisions`, { signal })).slice().reverse();
  const sources = new Map();
  const source = async (number) => {
    if (!sources.has(number)) {
      const entry = revisions.find((r) => r.revision === number);
      sources.set(number, entry?.deleted ? Promise.resolve("") : api(`flows/${flowPath(flow.namespace, flow.id)}`, { query: { revision: number }, signal }).then((f) => f.source));
    }
    return sources.get(number);
  };

  let selected = revisions.find((r) => !r.deleted)?.revision ?? revisions[0].revision;
  const list = h("ol", { class: "revision-list", "aria-label": "Revisions, newest first" });
  const compare = h("select", { id: "revision-compare" });
  const restoreButton = h("button", { type: "button", class: "revision-restore" }, "Restore this revision");
  const heading = h("h2", { class: "revision-title" });
  const caption = h("p", { class: "muted revision-caption" });
  const diffHost = h("div", { class: "diff-host" });
  let merge = null;
  signal.addEventListener("abort", () => merge?.destroy());

  const detail = h(
    "div",
    { class: "revision-detail" },
    h(
      "div",
      { class: "revision-toolbar" },
      heading,
      h("span", { class: "spacer" }),
      h("div", { class: "field flow-inline" }, h("label", { for: "revision-compare" }, "Compare with"), compare),
      restoreButton,
    ),
    caption,
    diffHost,
  );
  clear(panel, h("div", { class: "revisions" }, h("div", { class: "revision-side" }, h("h2", { class: "sr-only" }, "Revisions"), list), detail));

  const renderList = () => {
    clear(
      list,
      revisions.map((r) =>
        h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "revision-pick",
              "aria-pressed": String(r.revision === selected),
              onclick: () => show(r.revision),
            },
            h("span", { class: "revision-number" }, `Revision ${r.revision}`),
            r.revision === flow.revision ? h("span", { class: "badge flow-badge-accent" }, "latest") : null,
            r.deleted ? h("span", { class: "badge flow-badge-muted" }, "deleted") : null,
            h("span", { class: "revision-date muted", title: formatDate(r.createdAt) }, relativeTime(r.createdAt)),
          ),
        ),
      ),
    );
  };

  async function show(number, against) {
    selected = number;
    renderList();
    const others = revisions.filter((r) => r.revision !== number);
    const base = against ?? (revisions.find((r) => r.revision < number)?.revision ?? others[0]?.revision ?? null);
    clear(compare, others.map((r) => h("option", { value: r.revision }, `revision ${r.revision}${r.revision === number - 1 ? " (previous)" : ""}`)));
    compare.closest(".field").hidden = !others.length;
    if (base !== null) compare.value = String(base);
    const entry = revisions.find((r) => r.revision === number);
    heading.textContent = `Revision ${number}`;
    restoreButton.disabled = entry.deleted;
    restoreButton.title = entry.deleted ? "This revision is the flow's deletion" : "";
    // the older revision on the left, whichever was picked first
    const [older, newer] = base === null ? [null, number] : [Math.min(base, number), Math.max(base, number)];
    const [left, right] = await Promise.all([older === null ? null : source(older), source(newer)]);
    if (signal.aborted || selected !== number) return;
    caption.textContent = base === null
      ? `Saved ${formatDate(entry.createdAt)}. The only revision: nothing to compare with.`
      : `Saved ${formatDate(entry.createdAt)}. Changes from revision ${older} to revision ${newer}.`;
    merge?.destroy();
    merge = older === null
      ? yamlView(diffHost, right, `YAML of revision ${newer}`)
      : yamlDiff(diffHost, {
        left,
        right,
        leftTitle: `Revision ${older}`,
        rightTitle: `Revision ${newer}`,
        sameText: "The two revisions have the same YAML.",
      });
  }

  compare.addEventListener("change", () => show(selected, Number(compare.value)));
  restoreButton.addEventListener("click", async () => restore(selected, await source(selected)));
  await show(selected);
}

function readOnlyExtensions(label) {
  return [
    lineNumbers(),
    yaml(),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    EditorState.readOnly.of(true),
    EditorView.editable.of(false),
    EditorView.contentAttributes.of({ "aria-label": label, tabindex: "0" }),
  ];
}

// One YAML text, read-only, with line numbers and highlighting.
export function yamlView(host, text, label) {
  host.replaceChildren();
  return new EditorView({ parent: host, state: EditorState.create({ doc: text, extensions: readOnlyExtensions(label) }) });
}

// Two YAML texts side by side under column headings, the older on the left, changes
// marked and unchanged stretches folded: the Revisions tab's diff and the editor's
// "Review changes" both show theirs with it. Returns the MergeView (destroy() it after).
export function yamlDiff(host, { left, right, leftTitle, rightTitle, sameText = "No differences." }) {
  host.replaceChildren(h("div", { class: "diff-heads", "aria-hidden": "true" }, h("span", {}, leftTitle), h("span", {}, rightTitle)));
  if (left === right) host.append(h("p", { class: "muted diff-same" }, sameText));
  return new MergeView({
    parent: host,
    a: { doc: left, extensions: readOnlyExtensions(`YAML of ${leftTitle}`) },
    b: { doc: right, extensions: readOnlyExtensions(`YAML of ${rightTitle}`) },
    collapseUnchanged: { margin: 3, minSize: 6 },
    highlightChanges: true,
    gutter: true,
  });
}

// How many lines a MergeView's changes add and remove (for a "+3 −1" summary).
export function diffCounts(merge) {
  const lines = (doc, from, to) => (to > from ? doc.lineAt(Math.max(from, to - 1)).number - doc.lineAt(from).number + 1 : 0);
  let added = 0;
  let removed = 0;
  for (const chunk of merge.chunks) {
    removed += lines(merge.a.state.doc, chunk.fromA, chunk.toA);
    added += lines(merge.b.state.doc, chunk.fromB, chunk.toB);
  }
  return { added, removed };
}

// A modal <dialog> with a title and a close button, removed from the page once closed.
export function modal(main, title, content, { label = title, className = "" } = {}) {
  const dialog = h(
    "dialog",
    { class: `flow-modal ${className}`, "aria-label": label },
    h("div", { class: "flow-modal-head" }, h("h2", {}, title), h("button", { type: "button", class: "link flow-modal-close", "aria-label": "Close", onclick: () => dialog.close() }, "×")),
    content,
  );
  dialog.addEventListener("close", () => dialog.remove());
  main.append(dialog);
  dialog.showModal();
  return dialog;
}

// --- Triggers -------------------------------------------------------------------------

export async function triggersPanel(panel, page, { signal }) {
  if (!page.saved) return notSavedYet(panel, "triggers");
  const flow = page.saved;
  const answer = await api("triggers", { query: { namespace: flow.namespace, flowId: flow.id }, signal });
  const declared = new Map((flow.triggers || []).map((t) => [t.id, t]));
  const triggers = answer.results.filter((t) => t.namespace === flow.namespace && t.flowId === flow.id);
  if (!triggers.length) {
    clear(
      panel,
      h(
        "div",
        { class: "card empty" },
        h("p", {}, "This flow has no triggers: it starts from the Start button, the API or the CLI."),
        h("p", { class: "muted" }, "Add a ", h("code", {}, "triggers:"), " list to its YAML for a schedule, a webhook, other flows' ends or Kafka messages."),
      ),
    );
    return;
  }
  const body = h("tbody", {});
  const withBackfill = triggers.some((t) => t.type === "schedule");
  clear(
    panel,
    h(
      "table",
      { class: "list triggers-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Trigger"),
          h("th", { scope: "col" }, "Type"),
          h("th", { scope: "col" }, "Details"),
          h("th", { scope: "col" }, "Next fire time"),
          h("th", { scope: "col" }, "Last fired"),
          h("th", { scope: "col" }, "Enabled"),
          withBackfill ? h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")) : null,
        ),
      ),
      body,
    ),
    h("p", { class: "muted small triggers-note" }, "A switched-off trigger starts nothing until switched on again, whatever its YAML says; the ticks it missed meanwhile are not caught up."),
  );
  const rows = new Map();
  for (const trigger of triggers) {
    const row = triggerRow(trigger, declared.get(trigger.triggerId) || {}, flow, { readOnly: page.readOnly, withBackfill, host: panel });
    rows.set(trigger.triggerId, row);
    body.append(row.element);
  }
  // Keep next and last fire times current while the tab is shown.
  while (!signal.aborted) {
    await sleep(TRIGGERS_REFRESH_MS, signal);
    if (signal.aborted || document.visibilityState !== "visible") continue;
    try {
      const fresh = await api("triggers", { query: { namespace: flow.namespace, flowId: flow.id }, signal });
      for (const t of fresh.results) rows.get(t.triggerId)?.refresh(t);
    } catch {
      // the next round tries again
    }
  }
}

function triggerRow(trigger, definition, flow, { readOnly, withBackfill, host }) {
  const element = h("tr", { class: "trigger-row" });
  let busy = false;
  const fill = (t) => {
    const switchId = `trigger-switch-${t.triggerId}`;
    const hadFocus = document.activeElement?.id === switchId;
    clear(
      element,
      h("th", { scope: "row", class: "mono trigger-id" }, t.triggerId),
      h("td", {}, h("span", { class: `badge trigger-${t.type}` }, t.type)),
      h("td", { class: "trigger-details" }, triggerDetails(t, definition, flow)),
      h("td", { class: "trigger-next" }, t.type === "schedule" ? nextFire(t) : h("span", { class: "muted" }, "—")),
      h("td", { class: "trigger-last" }, lastFired(t)),
      h("td", { class: "trigger-enabled" }, triggerSwitch(t, fill, (value) => (busy = value), readOnly)),
      withBackfill ? h("td", { class: "trigger-actions" }, t.type === "schedule" ? backfillButton(t, definition, host, readOnly) : null) : null,
    );
    if (hadFocus) document.getElementById(switchId)?.focus();
  };
  fill(trigger);
  return { element, refresh: (t) => busy || fill(t) };
}

function nextFire(trigger) {
  if (trigger.disabled) return h("span", { class: "muted" }, "off");
  if (!trigger.nextTick) return h("span", { class: "muted" }, "—");
  return h("div", {}, h("time", { datetime: trigger.nextTick }, formatDate(trigger.nextTick)), h("div", { class: "muted small" }, relativeTime(trigger.nextTick)));
}

function lastFired(trigger) {
  const parts = [];
  if (trigger.lastFiredAt) {
    parts.push(when(trigger.lastFiredAt));
    if (trigger.lastFiredExecutionId) {
      parts.push(" · ", h("a", { href: `/ui/executions/${encodeURIComponent(trigger.lastFiredExecutionId)}`, class: "mono", title: trigger.lastFiredExecutionId }, trigger.lastFiredExecutionId.slice(0, 8)));
    }
  } else {
    parts.push(h("span", { class: "muted" }, "never"));
  }
  if (trigger.lastError) parts.push(h("div", { class: "trigger-error" }, trigger.lastError));
  return h("div", {}, parts);
}

function triggerDetails(trigger, definition, flow) {
  const items = [];
  const add = (label, ...value) => items.push(h("dt", {}, label), h("dd", {}, ...value));
  if (trigger.type === "schedule") {
    add("Cron", h("code", {}, trigger.cron ?? definition.cron ?? "?"), trigger.withSeconds ? h("span", { class: "muted" }, " (with seconds)") : null);
    add("Time zone", trigger.timezone || definition.timezone || "UTC");
    if (definition.recoverMissedSchedules) add("Missed ticks", definition.recoverMissedSchedules);
  } else if (trigger.type === "webhook") {
    add("URL", webhookUrl(definition.key, flow, trigger.triggerId));
  } else if (trigger.type === "flow") {
    add("After", flowConditions(definition));
  } else if (trigger.type === "kafka") {
    const topic = definition.topic ?? definition.topicPattern;
    add("Topic", h("code", {}, Array.isArray(topic) ? topic.join(", ") : topic ?? "?"));
  }
  if (definition.description) add("About", definition.description);
  if (trigger.stopAfter?.length) add("Stops after", trigger.stopAfter.join(", "));
  if (trigger.stoppedAfter) {
    add("Stopped", `after execution ${trigger.stoppedAfter.executionId} ended ${trigger.stoppedAfter.state}`);
  }
  return items.length ? h("dl", { class: "kv trigger-kv" }, items) : h("span", { class: "muted" }, "—");
}

function webhookUrl(key, flow, triggerId) {
  if (!key || /mask/i.test(key)) {
    return h("span", { class: "muted" }, "hidden: its key is shown to writers only");
  }
  const url = `${location.origin}/api/v1/executions/webhook/${flowPath(flow.namespace, flow.id)}/${encodeURIComponent(key)}`;
  const copy = h("button", { type: "button", class: "link copy", "aria-label": `Copy the webhook URL of ${triggerId}` }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(url);
      toast("Webhook URL copied");
    } catch {
      toast("The browser refused to copy: select the URL instead.", "error");
    }
  });
  return h("span", { class: "webhook-url" }, h("code", {}, url), " ", copy);
}

function flowConditions(definition) {
  const flows = definition.preconditions?.flows || [];
  const lines = flows.map((f) => {
    const target = [f.namespace, f.flowId].filter(Boolean).join("/") || "any flow";
    const states = f.states?.length ? ` in ${f.states.join(", ")}` : "";
    return h("div", {}, f.namespace && f.flowId ? h("a", { href: `/ui/flows/${encodeURIComponent(f.namespace)}/${encodeURIComponent(f.flowId)}` }, target) : target, states);
  });
  const conditions = definition.conditions?.length ? h("div", { class: "muted" }, `${definition.conditions.length} condition${definition.conditions.length === 1 ? "" : "s"} more`) : null;
  return lines.length || conditions ? h("div", {}, lines, conditions) : h("span", { class: "muted" }, "any execution's end");
}

function triggerSwitch(trigger, refill, setBusy, readOnly) {
  const id = `trigger-switch-${trigger.triggerId}`;
  const input = h("input", {
    type: "checkbox",
    role: "switch",
    id,
    class: "switch",
    "aria-label": `Enabled ${trigger.triggerId}`,
    checked: !trigger.disabled,
    disabled: trigger.disabledInFlow || readOnly,
    title: readOnly ? READ_ONLY : trigger.disabledInFlow ? "Off in the YAML (disabled: true): edit the flow to turn it on" : null,
  });
  input.checked = !trigger.disabled;
  input.addEventListener("change", async () => {
    const wanted = input.checked;
    input.disabled = true;
    setBusy(true);
    try {
      const updated = await api(`triggers/${encodeURIComponent(trigger.namespace)}/${encodeURIComponent(trigger.flowId)}/${encodeURIComponent(trigger.triggerId)}`, {
        method: "PUT",
        body: { disabled: !wanted },
      });
      toast(`Trigger ${trigger.triggerId} ${wanted ? "switched on" : "switched off"}`);
      setBusy(false);
      refill({ ...trigger, ...updated });
      document.getElementById(id)?.focus();
    } catch (error) {
      setBusy(false);
      input.checked = !wanted;
      input.disabled = trigger.disabledInFlow || readOnly;
      toast(`Trigger ${trigger.triggerId} not switched: ${error.message}`, "error");
    }
  });
  const state = trigger.disabledInFlow
    ? "off in the YAML"
    : trigger.runtimeDisabled
      ? "switched off"
      : trigger.disabled
        ? "off"
        : "on";
  return h("label", { class: "switch-wrap", for: id }, input, h("span", { class: "switch-text", "aria-hidden": "true" }, state));
}

// --- Backfill -------------------------------------------------------------------------

function backfillButton(trigger, definition, host, readOnly) {
  return h(
    "button",
    {
      type: "button",
      class: "backfill-open",
      "aria-label": `Backfill ${trigger.triggerId}`,
      disabled: readOnly,
      title: readOnly ? READ_ONLY : "Start the ticks of a past range",
      onclick: () => backfillDialog(host.closest("main") || document.body, trigger, definition),
    },
    "Backfill",
  );
}

// `headrace trigger backfill`: every tick of [Start, End), read on the trigger's wall
// clock (the API reads times without an offset in the trigger's time zone); the answer
// lists the ticks' executions, or the API's message says why there are none.
function backfillDialog(main, trigger, definition) {
  const zone = trigger.timezone || definition.timezone || "UTC";
  const step = trigger.withSeconds ? "1" : "60";
  const now = wallClock(new Date(), zone);
  const start = h("input", { id: "backfill-start", type: "datetime-local", step, max: now, required: true, "aria-describedby": "backfill-start-help" });
  const end = h("input", { id: "backfill-end", type: "datetime-local", step, max: now, required: true, "aria-describedby": "backfill-end-help" });
  const field = (input, label, help) =>
    h("div", { class: "field" }, h("label", { for: input.id }, label), input, h("small", { class: "help", id: `${input.id}-help` }, help));
  const message = h("div", { class: "form-error", role: "alert", hidden: true });
  const result = h("div", { class: "backfill-result", role: "status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Run backfill");
  const close = h("button", { type: "button" }, "Close");
  const form = h(
    "form",
    { class: "backfill-form", novalidate: true },
    h("p", {}, "Starts every tick of ", h("code", {}, trigger.cron ?? definition.cron ?? "the schedule"), " from Start (included) to End (excluded), as the scheduler would have, with the same execution ids: a tick that already ran starts nothing new."),
    h("div", { class: "backfill-range" }, field(start, "Start", `${zone} time, included`), field(end, "End", `${zone} time, excluded; not after now (${now.replace("T", " ")} there)`)),
    message,
    result,
    h("div", { class: "actions" }, close, submit),
  );
  const dialog = modal(main, `Backfill ${trigger.triggerId}`, [h("p", { class: "muted" }, `${trigger.namespace} / ${trigger.flowId}`), form], { className: "backfill-dialog" });
  close.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    const problem = rangeProblem(start.value, end.value, zone);
    if (problem) {
      message.textContent = problem.text;
      message.hidden = false;
      (problem.field === "start" ? start : end).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Starting…";
    clear(result);
    try {
      const answer = await api(`triggers/${encodeURIComponent(trigger.namespace)}/${encodeURIComponent(trigger.flowId)}/${encodeURIComponent(trigger.triggerId)}/backfill`, {
        method: "POST",
        body: { start: start.value, end: end.value },
      });
      showBackfill(result, answer);
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = "Run backfill";
    }
  });
  start.focus();
}

// What the API would refuse anyway, said before asking it (both values are wall-clock
// times of the same zone, "YYYY-MM-DDTHH:MM[:SS]", so they compare as text).
function rangeProblem(start, end, zone) {
  if (!start) return { field: "start", text: "Give a Start." };
  if (!end) return { field: "end", text: "Give an End." };
  const full = (value) => (value.length === 16 ? `${value}:00` : value);
  if (full(end) <= full(start)) return { field: "end", text: "End must be after Start." };
  const now = wallClock(new Date(), zone);
  if (full(end) > `${now}:59`) {
    return { field: "end", text: `End is in the future (it is ${now.replace("T", " ")} in ${zone}): a backfill covers past ticks; the scheduler starts the later ones.` };
  }
  return null;
}

// The API answers with every tick's execution id, those that had already run included
// (ids are the tick's own, so nothing starts twice): say so rather than "N new".
function showBackfill(host, answer) {
  const ids = answer.executionIds || [];
  if (!answer.count) {
    clear(host, h("p", { class: "backfill-none" }, "No tick to start: the range holds none, or the trigger's conditions were false for each."));
    return;
  }
  const all = `/ui/executions?namespace=${encodeURIComponent(answer.namespace)}&flowId=${encodeURIComponent(answer.flowId)}`;
  const plural = answer.count === 1 ? "" : "s";
  clear(
    host,
    h("p", { class: "backfill-count" }, `${answer.count} tick${plural} in that range: ${answer.count} execution${plural}, one per tick.`),
    h(
      "ul",
      { class: "backfill-ids", "aria-label": "Their executions" },
      ids.slice(0, BACKFILL_LISTED).map((id) => h("li", {}, h("a", { href: `/ui/executions/${encodeURIComponent(id)}`, class: "mono", title: id }, id.slice(0, 8)))),
      ids.length > BACKFILL_LISTED ? h("li", { class: "muted" }, `and ${ids.length - BACKFILL_LISTED} more`) : null,
    ),
    h("p", { class: "muted small" }, "A tick that had already run (on time or in an earlier backfill) keeps its execution: nothing starts twice. ", h("a", { href: all }, "All executions of this flow")),
  );
}

// `date` on the wall clock of `zone`, as a datetime-local value ("2024-03-01T09:30").
function wallClock(date, zone) {
  try {
    const parts = Object.fromEntries(
      new Intl.DateTimeFormat("en-GB", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" })
        .formatToParts(date)
        .map((p) => [p.type, p.value]),
    );
    return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
  } catch {
    return date.toISOString().slice(0, 16); // a zone this browser does not know: UTC
  }
}

// --- Executions -----------------------------------------------------------------------

export async function executionsPanel(panel, page, { signal }) {
  if (!page.saved) return notSavedYet(panel, "executions");
  const flow = page.saved;
  const body = h("tbody", {});
  const count = h("p", { class: "muted" });
  const all = h("a", { href: `/ui/executions?namespace=${encodeURIComponent(flow.namespace)}&flowId=${encodeURIComponent(flow.id)}` }, "All executions of this flow");
  const table = h(
    "table",
    { class: "list flow-executions" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Execution"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Created"),
        h("th", { scope: "col", class: "num" }, "Duration"),
        h("th", { scope: "col" }, "Trigger"),
        h("th", { scope: "col", class: "num" }, "Revision"),
        h("th", { scope: "col" }, "Labels"),
      ),
    ),
    body,
  );
  const empty = h("div", { class: "card empty", hidden: true }, h("p", {}, "No executions yet: press Start to run this flow."));
  clear(panel, h("div", { class: "row executions-head" }, count, h("span", { class: "spacer" }), all), table, empty);

  while (!signal.aborted) {
    if (document.visibilityState === "visible") {
      try {
        const answer = await api("executions", { query: { namespace: flow.namespace, flowId: flow.id, size: EXECUTIONS_SHOWN }, signal });
        const runs = answer.results.filter((e) => e.namespace === flow.namespace && e.flowId === flow.id);
        clear(body, runs.map(executionRow));
        table.hidden = !runs.length;
        empty.hidden = runs.length > 0;
        count.textContent = answer.total > runs.length ? `The last ${runs.length} of ${answer.total} executions` : `${runs.length} execution${runs.length === 1 ? "" : "s"}`;
      } catch (error) {
        if (signal.aborted) return;
        count.textContent = `Could not refresh: ${error.message}`;
      }
    }
    await sleep(EXECUTIONS_REFRESH_MS, signal);
  }
}

function executionRow(execution) {
  const state = execution.state?.current || "CREATED";
  const start = execution.state?.startDate || execution.createdAt;
  const end = TERMINAL_STATES.has(state) ? execution.state?.endDate : null;
  const labels = Object.entries(execution.labels || {});
  return h(
    "tr",
    {},
    h("td", {}, h("a", { href: `/ui/executions/${encodeURIComponent(execution.id)}`, class: "mono", title: execution.id }, execution.id.slice(0, 8))),
    h("td", {}, stateBadge(state)),
    h("td", { class: "nowrap" }, h("time", { datetime: execution.createdAt, title: relativeTime(execution.createdAt) }, formatDate(execution.createdAt))),
    h("td", { class: "num" }, formatDuration(duration(start, end))),
    h("td", {}, execution.trigger?.type || "—"),
    h("td", { class: "num" }, execution.flowRevision ?? "—"),
    h("td", {}, labels.length ? labels.map(([k, v]) => h("span", { class: "badge" }, `${k}: ${v}`)) : h("span", { class: "muted" }, "—")),
  );
}
