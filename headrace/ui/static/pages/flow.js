// One flow (/ui/flows/{namespace}/{id}) and a new one (/ui/flows/new?namespace=x): the
// header (namespace, id, revision, description; Start, Review changes, Save, Delete) and
// five tabs: the YAML Editor (components/editor.js), the Topology, the Revisions with
// their diffs, the Triggers with their switches and backfills, and the flow's Executions
// (pages/flow_panels.js).
//
// Saving creates a revision (`PUT /api/v1/flows/{ns}/{id}`, `POST /api/v1/flows` for a
// new flow); "Review changes" first shows the diff against the stored revision, as
// `headrace flow apply --dry-run` does. A YAML whose id or namespace no longer match the
// page's flow is never saved over it silently: a dialog explains what saving would do.
// Leaving with unsaved changes asks first (beforeunload, and links inside the app). A
// reader's token (`GET /api/v1/me`) sees every button that would change something
// disabled, with the reason.

import { api, ApiError, READ_ONLY, whoAmI } from "../api.js";
import { clear, errorBox, flowHref, flowPath, formatDate, h, relativeTime, toast } from "../dom.js";
import { createFlowEditor } from "../components/editor.js";
import { inputForm } from "../components/input_form.js";
import { diffCounts, executionsPanel, modal, revisionsPanel, topologyPanel, triggersPanel, yamlDiff } from "./flow_panels.js";

const TABS = [
  ["editor", "Editor"],
  ["topology", "Topology"],
  ["revisions", "Revisions"],
  ["triggers", "Triggers"],
  ["executions", "Executions"],
];

let schemaPromise = null;

// The flow JSON Schema, fetched once per page load (it changes only with connectors).
function flowSchema() {
  schemaPromise ||= api("flows/schema").catch((error) => {
    schemaPromise = null;
    throw error;
  });
  return schemaPromise;
}

function starterYaml(namespace) {
  return `id: my-flow
namespace: ${namespace || "company.team"}
description: What this flow does, for whoever reads it next.

inputs:
  - id: name
    type: STRING
    defaults: world

tasks:
  - id: hello
    type: log
    message: "Hello, {{ inputs.name }}!"
`;
}

export async function render(main, params, ctx) {
  const { signal } = ctx;
  const page = {
    isNew: !params.id,
    namespace: params.namespace || null,
    id: params.id || null,
    saved: null, // the flow as the API last answered it
    savedSource: "",
    validation: null,
    saving: false,
    readOnly: false, // a reader's token: nothing that writes is offered
  };
  const schemaLoad = flowSchema().catch(() => null); // completion is a help, not a need
  const who = whoAmI();
  if (!page.isNew) {
    try {
      page.saved = await api(`flows/${flowPath(page.namespace, page.id)}`, { signal });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      ctx.setTitle("Flow not found");
      clear(main, h("h1", {}, page.id), errorBox(error), h("p", {}, h("a", { href: "/ui/flows" }, "All flows"), " · ", h("a", { href: `/ui/flows/new?namespace=${encodeURIComponent(page.namespace)}` }, "New flow")));
      return;
    }
  }
  page.savedSource = page.isNew ? starterYaml(ctx.query.get("namespace")) : page.saved.source;
  const schema = await schemaLoad;
  page.readOnly = (await who)?.role === "reader";
  if (signal.aborted) return;

  const header = flowHeader(page, {
    onSave: () => save(),
    onStart: () => openStart(),
    onReview: () => openReview(),
    onDelete: () => openDelete(),
  });
  const editor = createFlowEditor({
    doc: page.savedSource,
    schema,
    signal,
    onChange: () => header.update(),
    onSave: () => save(),
    onValidated: (result) => {
      page.validation = result;
      header.update();
    },
  });
  header.bindEditor(editor);

  const panels = {
    editor: { build: (panel) => panel.append(editor.element), keep: true },
    topology: { build: (panel) => topologyPanel(panel, page) },
    revisions: { build: (panel, tabSignal) => revisionsPanel(panel, page, { signal: tabSignal, restore: restoreRevision }) },
    triggers: { build: (panel, tabSignal) => triggersPanel(panel, page, { signal: tabSignal }) },
    executions: { build: (panel, tabSignal) => executionsPanel(panel, page, { signal: tabSignal }) },
  };
  const tabs = tabSet(panels, ctx.query.get("tab") || "editor", signal);
  main.append(header.element, tabs.element);
  ctx.setTitle(page.isNew ? "New flow" : `${page.id} · ${page.namespace}`);
  editor.validateNow();
  guardUnsavedChanges(main, signal, () => isDirty());

  const onKey = (event) => {
    // the editor handles its own Ctrl-S (and marks the event handled)
    if (!event.defaultPrevented && (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "s" && !event.altKey) {
      event.preventDefault();
      save();
    }
  };
  document.addEventListener("keydown", onKey);
  signal.addEventListener("abort", () => document.removeEventListener("keydown", onKey));

  function isDirty() {
    return editor.text() !== page.savedSource;
  }

  function restoreRevision(revision, source) {
    editor.setText(source);
    tabs.select("editor");
    editor.focus();
    toast(`Revision ${revision} is in the editor: save to make it the latest revision.`);
  }

  async function save() {
    if (page.saving) return;
    if (page.readOnly) return toast("Not saved: this is a read-only token.", "error");
    page.saving = true;
    header.update();
    try {
      const text = editor.text();
      let check = await editor.validateNow();
      while (check === null && !signal.aborted) check = await editor.validateNow(); // superseded by typing
      if (!check || signal.aborted) return;
      if (check.failed) return toast(`Not saved: the flow could not be checked (${check.failed})`, "error");
      if (check.errors.length) {
        toast(`Not saved: fix the ${check.errors.length === 1 ? "error" : `${check.errors.length} errors`} listed under Problems first.`, "error");
        return;
      }
      if (!page.isNew && (check.namespace !== page.namespace || check.id !== page.id)) {
        await renamedFlowDialog(main, page, check, text, { putBack: putIdentityBack, saveElsewhere });
        return;
      }
      const flow = page.isNew
        ? await api("flows", { method: "POST", yaml: text })
        : await api(`flows/${flowPath(page.namespace, page.id)}`, { method: "PUT", yaml: text });
      afterSave(flow, text);
    } catch (error) {
      saveFailed(error);
    } finally {
      page.saving = false;
      header.update();
    }
  }

  function saveFailed(error) {
    if (error?.status === 409 && page.isNew) {
      toast(`${error.message}: change the id, or open the existing flow from the Flows list.`, "error");
    } else if (error?.status === 422 && Array.isArray(error.body?.errors)) {
      toast(`Not saved: ${error.message}`, "error");
      editor.validateNow();
    } else {
      toast(`Not saved: ${error?.message || error}`, "error");
    }
  }

  function afterSave(flow, text) {
    const unchanged = !page.isNew && page.saved && flow.revision === page.saved.revision;
    page.saved = flow;
    page.savedSource = text;
    if (page.isNew) {
      page.isNew = false;
      page.namespace = flow.namespace;
      page.id = flow.id;
      history.replaceState(null, "", flowHref(flow.namespace, flow.id) + location.search.replace(/([?&])namespace=[^&]*&?/, "$1").replace(/[?&]$/, ""));
      ctx.setTitle(`${flow.id} · ${flow.namespace}`);
    }
    toast(unchanged ? `No changes: revision ${flow.revision} is the latest.` : `Saved revision ${flow.revision}`);
    header.update();
    tabs.invalidate();
  }

  // Rewrites the YAML's top-level `id:` and `namespace:` lines back to the page's flow.
  function putIdentityBack() {
    const text = editor.text()
      .replace(/^id:[^\n#]*/m, `id: ${page.id}`)
      .replace(/^namespace:[^\n#]*/m, `namespace: ${page.namespace}`);
    editor.setText(text);
    editor.focus();
  }

  async function saveElsewhere(check, text, exists) {
    const flow = exists
      ? await api(`flows/${flowPath(check.namespace, check.id)}`, { method: "PUT", yaml: text })
      : await api("flows", { method: "POST", yaml: text });
    toast(`Saved ${flow.namespace}/${flow.id} revision ${flow.revision}`);
    page.savedSource = editor.text(); // nothing left unsaved here: the text went elsewhere
    ctx.navigate(flowHref(flow.namespace, flow.id));
  }

  function openStart() {
    startDialog(main, page, { dirty: isDirty(), navigate: ctx.navigate });
  }

  function openReview() {
    reviewDialog(main, page, editor.text(), { signal, onSave: () => save() });
  }

  function openDelete() {
    deleteDialog(main, page, {
      dirty: isDirty(),
      onDeleted: () => {
        page.savedSource = editor.text(); // nothing left to ask about when leaving
        toast(`Deleted ${page.namespace}/${page.id}`);
        ctx.navigate("/ui/flows");
      },
    });
  }
}

// The header: where the flow lives, its id, revision and description; Start on its own,
// then Review changes and Save, then Delete apart.
function flowHeader(page, { onSave, onStart, onReview, onDelete }) {
  const title = h("h1", {});
  const revision = h("span", { class: "badge flow-revision" });
  const unsaved = h("span", { class: "badge flow-unsaved", hidden: true }, "Unsaved changes");
  const readOnly = h("span", { class: "badge flow-readonly", hidden: true, title: "This token can read flows and executions, not change them" }, "Read-only token");
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Breadcrumb" });
  const description = h("p", { class: "flow-description" });
  const meta = h("p", { class: "flow-meta muted" });
  const start = h("button", { type: "button", class: "flow-start", onclick: onStart }, "Start");
  const review = h("button", { type: "button", class: "flow-review", onclick: onReview }, "Review changes");
  const save = h("button", { type: "button", class: "primary flow-save", onclick: onSave }, "Save");
  const remove = h("button", { type: "button", class: "danger flow-delete", onclick: onDelete }, "Delete");
  const element = h(
    "header",
    { class: "flow-header" },
    crumbs,
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "flow-title" }, title, revision, unsaved, readOnly),
      h("span", { class: "spacer" }),
      h("div", { class: "flow-actions" }, start, h("span", { class: "flow-actions-sep", "aria-hidden": "true" }), review, save, remove),
    ),
    description,
    meta,
  );
  let editor = null;
  const update = () => {
    const flow = page.saved;
    title.textContent = page.isNew ? "New flow" : page.id;
    clear(crumbs, h("a", { href: "/ui/flows" }, "Flows"), " / ", page.isNew ? "new" : h("a", { href: `/ui/flows?namespace=${encodeURIComponent(page.namespace)}` }, page.namespace));
    revision.hidden = !flow;
    revision.textContent = flow ? `revision ${flow.revision}` : "";
    const dirty = editor ? editor.text() !== page.savedSource : false;
    unsaved.hidden = !dirty || page.isNew;
    readOnly.hidden = !page.readOnly;
    description.textContent = flow?.description || "";
    description.hidden = !flow?.description;
    clear(meta, flow ? [`Saved ${relativeTime(flow.createdAt)}`, h("span", { class: "sep", "aria-hidden": "true" }, " · "), formatDate(flow.createdAt)] : "Not saved yet: write the flow, then Save.");
    const errors = page.validation?.errors?.length || 0;
    save.disabled = page.saving || errors > 0 || page.readOnly;
    save.textContent = page.saving ? "Saving…" : "Save";
    save.title = page.readOnly ? READ_ONLY : errors ? "Fix the problems first" : "Save (Ctrl+S)";
    start.disabled = !flow || page.readOnly;
    start.title = page.readOnly ? READ_ONLY : flow ? (dirty ? "Starts the saved revision" : "") : "Save the flow first";
    review.hidden = page.isNew; // a new flow has nothing stored to compare with
    review.disabled = !dirty;
    review.title = dirty ? "See what saving would change" : "The editor holds the saved revision";
    remove.hidden = page.isNew;
    remove.disabled = page.readOnly;
    remove.title = page.readOnly ? READ_ONLY : "Delete this flow (its executions stay)";
  };
  update();
  return {
    element,
    update,
    bindEditor(value) {
      editor = value;
      update();
    },
  };
}

// Accessible tabs (role=tablist; arrows, Home and End move between them). Panels are
// built on first view and rebuilt after `invalidate()` (a save), except the editor's.
function tabSet(panels, initial, signal) {
  const list = h("div", { class: "tabs", role: "tablist", "aria-label": "Flow" });
  const body = h("div", { class: "tab-panels" });
  const entries = TABS.map(([key, label]) => {
    const tab = h("button", { type: "button", role: "tab", id: `flow-tab-${key}`, "aria-controls": `flow-panel-${key}`, "aria-selected": "false", tabindex: "-1" }, label);
    const panel = h("div", { role: "tabpanel", id: `flow-panel-${key}`, "aria-labelledby": `flow-tab-${key}`, class: `tab-panel panel-${key}`, tabindex: "0", hidden: true });
    list.append(tab);
    body.append(panel);
    return { key, tab, panel, built: false, controller: null };
  });
  let current = null;

  function select(key, { focus = false } = {}) {
    const entry = entries.find((e) => e.key === key) || entries[0];
    for (const e of entries) {
      const on = e === entry;
      e.tab.setAttribute("aria-selected", String(on));
      e.tab.tabIndex = on ? 0 : -1;
      e.panel.hidden = !on;
      if (!on && e.controller) {
        e.controller.abort(); // stop the hidden panel's refreshing
        e.controller = null;
        if (!panels[e.key].keep) e.built = false;
      }
    }
    current = entry;
    if (!entry.built) build(entry);
    if (focus) entry.tab.focus();
    const url = new URL(location.href);
    if (entry.key === "editor") url.searchParams.delete("tab");
    else url.searchParams.set("tab", entry.key);
    history.replaceState(null, "", url.pathname + url.search);
  }

  function build(entry) {
    entry.built = true;
    entry.controller = new AbortController();
    const tabSignal = AbortSignal.any([signal, entry.controller.signal]);
    if (!panels[entry.key].keep) clear(entry.panel);
    Promise.resolve(panels[entry.key].build(entry.panel, tabSignal)).catch((error) => {
      if (!tabSignal.aborted) clear(entry.panel, errorBox(error));
    });
  }

  list.addEventListener("click", (event) => {
    const tab = event.target.closest("[role=tab]");
    if (tab) select(tab.id.replace("flow-tab-", ""));
  });
  list.addEventListener("keydown", (event) => {
    const index = entries.indexOf(current);
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: entries.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = entries[(moves[event.key] + entries.length) % entries.length];
    select(next.key, { focus: true });
  });
  select(initial);
  return {
    element: h("div", { class: "flow-tabs" }, list, body),
    select,
    invalidate() {
      for (const e of entries) {
        if (panels[e.key].keep) continue;
        e.controller?.abort();
        e.controller = null;
        e.built = false;
      }
      if (current && !current.built) build(current);
    },
  };
}

// Asks before leaving the page with unsaved changes: the browser's own question for a
// reload or a closed tab, ours for a link inside the app.
function guardUnsavedChanges(main, signal, dirty) {
  const beforeUnload = (event) => {
    if (!dirty()) return;
    event.preventDefault();
    event.returnValue = "";
  };
  const onClick = (event) => {
    const a = event.target.closest?.("a[href]");
    if (!a || !dirty() || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || a.target) return;
    const target = new URL(typeof a.href === "string" ? a.href : a.href.baseVal, location.href);
    if (target.origin !== location.origin || target.pathname === location.pathname) return;
    event.preventDefault();
    event.stopPropagation();
    confirmLeave(main, () => {
      window.removeEventListener("beforeunload", beforeUnload);
      document.removeEventListener("click", onClick, true);
      // A click event, not a.click(): SVG links (the topology's) have no click().
      a.dispatchEvent(new MouseEvent("click", { bubbles: true, cancelable: true }));
    });
  };
  window.addEventListener("beforeunload", beforeUnload);
  document.addEventListener("click", onClick, true);
  signal.addEventListener("abort", () => {
    window.removeEventListener("beforeunload", beforeUnload);
    document.removeEventListener("click", onClick, true);
  });
}

function confirmLeave(main, leave) {
  const stay = h("button", { type: "button", class: "primary" }, "Stay");
  const go = h("button", { type: "button", class: "danger" }, "Leave without saving");
  const dialog = modal(main, "Unsaved changes", [
    h("p", {}, "This flow has changes that are not saved. Leave the page and lose them?"),
    h("div", { class: "actions" }, stay, go),
  ]);
  stay.addEventListener("click", () => dialog.close());
  go.addEventListener("click", () => {
    dialog.close();
    leave();
  });
  stay.focus();
}

// The YAML names another flow than the page's: explain, then save it there or put the
// page's id back.
async function renamedFlowDialog(main, page, check, text, { putBack, saveElsewhere }) {
  // Read through the namespace's listing: a GET of a missing flow would log a 404.
  const listing = await api("flows", { query: { namespace: check.namespace } });
  const existing = listing.results.find((f) => f.namespace === check.namespace && f.id === check.id) || null;
  const here = `${page.namespace}/${page.id}`;
  const there = `${check.namespace}/${check.id}`;
  const message = h("div", { class: "form-error", role: "alert", hidden: true });
  const saveThere = h("button", { type: "button", class: existing ? "danger" : "primary" }, `Save as ${there}`);
  const back = h("button", { type: "button" }, `Keep ${here}`);
  const cancel = h("button", { type: "button" }, "Cancel");
  const dialog = modal(main, "This YAML names another flow", [
    h("p", {}, "This page edits ", h("strong", {}, here), ", but the YAML now says ", h("strong", {}, there), "."),
    h("p", {}, "Saving never renames a flow. Saving here would make ", h("strong", {}, there), " a separate flow, and leave ", h("strong", {}, here), " as it is (delete it yourself if you meant to move it)."),
    existing
      ? h("p", { class: "flow-warning" }, h("strong", {}, there), ` already exists (revision ${existing.revision}): saving replaces its YAML with this one, as a new revision.`)
      : null,
    message,
    h("div", { class: "actions" }, back, saveThere, cancel),
  ], { className: "rename-dialog" });
  back.addEventListener("click", () => {
    dialog.close();
    putBack();
  });
  cancel.addEventListener("click", () => dialog.close());
  saveThere.addEventListener("click", async () => {
    saveThere.disabled = true;
    try {
      await saveElsewhere(check, text, Boolean(existing));
      dialog.close();
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
      saveThere.disabled = false;
    }
  });
  back.focus();
}

// "Start": the flow's inputs as a form, optional labels, then the execution's page.
function startDialog(main, page, { dirty, navigate }) {
  const flow = page.saved;
  const labels = h("textarea", { id: "start-labels", rows: 2, class: "mono", placeholder: "team=data", spellcheck: "false", "aria-describedby": "start-labels-help" });
  const labelsField = h(
    "div",
    { class: "field" },
    h("label", { for: "start-labels" }, "Labels ", h("span", { class: "muted type" }, "optional")),
    labels,
    h("small", { class: "help", id: "start-labels-help" }, "One key=value per line, added to the flow's own labels."),
  );
  const form = inputForm(flow.inputs || [], {
    submitLabel: "Start execution",
    extra: [labelsField],
    onSubmit: async (values) => {
      const execution = await api(`executions/${flowPath(flow.namespace, flow.id)}`, {
        method: "POST",
        body: values,
        query: { labels: parseLabels(labels.value) },
      });
      dialog.close();
      navigate(`/ui/executions/${encodeURIComponent(execution.id)}`);
    },
  });
  const dialog = modal(main, `Start ${flow.id}`, [
    h("p", { class: "muted" }, `${flow.namespace} · revision ${flow.revision}`),
    dirty ? h("p", { class: "flow-warning" }, `The editor has unsaved changes: this starts revision ${flow.revision} as saved.`) : null,
    form,
  ], { className: "start-dialog" });
  const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
  form.querySelector(".actions")?.prepend(cancel);
  const first = form.querySelector("input, select, textarea");
  (first || form.querySelector("button[type=submit]")).focus();
}

// "team=data" lines (or "team: data") as the API's `labels=team:data` values.
function parseLabels(text) {
  return text
    .split(/\n|,/)
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const match = /^([^=:\s][^=:]*?)\s*[=:]\s*(.*)$/.exec(line);
      if (!match || !match[2]) throw new Error(`Labels: "${line}" is not key=value`);
      return `${match[1]}:${match[2]}`;
    });
}

// "Review changes": the stored revision against the editor's text, as `flow apply
// --dry-run` shows it, with Save at hand. The stored flow is read again first: when
// someone saved a newer revision meanwhile, the diff is against that one, and says so.
async function reviewDialog(main, page, text, { signal, onSave }) {
  const diffHost = h("div", { class: "diff-host" });
  const summary = h("p", { class: "muted review-summary" }, "Reading the stored revision…");
  const notes = h("div", {});
  const save = h("button", { type: "button", class: "primary" }, "Save");
  const close = h("button", { type: "button" }, "Back to the editor");
  const dialog = modal(main, `Review changes to ${page.id}`, [summary, notes, diffHost, h("div", { class: "actions" }, close, save)], { className: "review-dialog" });
  let merge = null;
  dialog.addEventListener("close", () => merge?.destroy());
  signal.addEventListener("abort", () => dialog.close(), { once: true });
  close.addEventListener("click", () => dialog.close());
  save.addEventListener("click", () => {
    dialog.close();
    onSave();
  });
  const errors = page.validation?.errors?.length || 0;
  save.disabled = page.readOnly || errors > 0;
  save.title = page.readOnly ? READ_ONLY : errors ? "Fix the problems first" : "";
  if (errors) notes.append(h("p", { class: "flow-warning" }, `The editor's YAML has ${errors === 1 ? "an error" : `${errors} errors`}: fix ${errors === 1 ? "it" : "them"} (see Problems) before saving.`));
  close.focus();

  let stored = page.saved;
  try {
    const latest = await api(`flows/${flowPath(page.namespace, page.id)}`, { signal });
    if (latest.revision !== page.saved.revision) {
      notes.append(h("p", { class: "flow-warning" }, `Revision ${latest.revision} was saved after this page loaded revision ${page.saved.revision} (from another tab, the CLI or the API). Below is the change from revision ${latest.revision}; saving replaces it.`));
    }
    stored = latest;
  } catch (error) {
    if (signal.aborted || !dialog.open) return;
    notes.append(h("p", { class: "flow-warning" }, error.status === 404 ? "This flow was deleted after the page loaded it: saving makes it again." : `Could not read the stored flow (${error.message}): below is the change from the revision this page loaded.`));
  }
  if (!dialog.open) return;
  merge = yamlDiff(diffHost, {
    left: stored.source,
    right: text,
    leftTitle: `Revision ${stored.revision} (saved)`,
    rightTitle: "Editor",
    sameText: "The editor holds the same YAML: saving would make no new revision.",
  });
  const { added, removed } = diffCounts(merge);
  summary.textContent = stored.source === text
    ? "No changes."
    : `Saving makes revision ${stored.revision + 1}: ${added} line${added === 1 ? "" : "s"} added, ${removed} removed.`;
}

// "Delete": what `DELETE /api/v1/flows/{ns}/{id}` does, said before it happens.
function deleteDialog(main, page, { dirty, onDeleted }) {
  const name = `${page.namespace}/${page.id}`;
  const message = h("div", { class: "form-error", role: "alert", hidden: true });
  const cancel = h("button", { type: "button" }, "Cancel");
  const confirm = h("button", { type: "button", class: "danger primary" }, "Delete flow");
  const dialog = modal(main, `Delete ${page.id}?`, [
    h("p", {}, "This deletes the flow ", h("strong", {}, name), ": its triggers stop, and it can no longer be started."),
    h("p", {}, "Its executions stay, with their logs and outputs. So does its revision history: saving a flow with this namespace and id again continues it."),
    dirty ? h("p", { class: "flow-warning" }, "The editor's unsaved changes are lost too.") : null,
    message,
    h("div", { class: "actions" }, cancel, confirm),
  ], { label: `Delete ${page.id}`, className: "delete-dialog" });
  cancel.addEventListener("click", () => dialog.close());
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    message.hidden = true;
    try {
      await api(`flows/${flowPath(page.namespace, page.id)}`, { method: "DELETE" });
      dialog.close();
      onDeleted();
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
      confirm.disabled = false;
    }
  });
  cancel.focus();
}
