// The executions list (/ui/executions): filters kept in the URL's query (shareable, Back
// works), server-side pages of 25, and a live refresh of the page on screen every 2 s
// while the tab is visible. Rows are updated in place, so focus and scroll stay put.

import { api } from "../api.js";
import { clear, duration, errorBox, flowHref, formatDuration, h, sleep, stateBadge, TERMINAL_STATES, toLocalInput } from "../dom.js";

const PAGE_SIZE = 25;
const REFRESH_MS = 2000;
const TYPING_DEBOUNCE_MS = 350;
// The states an execution can be in (task runs also know RETRYING and SKIPPED).
const STATES = ["CREATED", "QUEUED", "RUNNING", "PAUSED", "SUCCESS", "WARNING", "FAILED", "KILLING", "KILLED", "CANCELLED"];

// ------------------------------------------------------------------ filters <-> URL

function filtersFromQuery(query) {
  const states = query.getAll("state").flatMap((s) => s.split(",")).map((s) => s.trim().toUpperCase()).filter(Boolean);
  return {
    namespace: query.get("namespace") || "",
    flowId: query.get("flowId") || "",
    state: [...new Set(states)],
    startDate: query.get("startDate") || "",
    endDate: query.get("endDate") || "",
    labels: query.getAll("labels").join(" "),
    q: query.get("q") || "",
    page: Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1),
  };
}

// "team:data, env:prod" or "team:data env:prod" -> ["team:data", "env:prod"]; null when
// one item is not key:value.
// `team:data env=prod`: key:value or key=value (as the Start form takes them).
export function parseLabels(text) {
  const items = text.split(/[\s,]+/).filter(Boolean).map((item) => item.replace(/^([^:=]+)=/, "$1:"));
  return items.every((item) => /^[^:]+:.+$/.test(item)) ? items : null;
}

function queryOf(filters, { withPage = true } = {}) {
  const params = new URLSearchParams();
  if (filters.namespace) params.set("namespace", filters.namespace);
  if (filters.flowId) params.set("flowId", filters.flowId);
  for (const state of filters.state) params.append("state", state);
  if (filters.startDate) params.set("startDate", filters.startDate);
  if (filters.endDate) params.set("endDate", filters.endDate);
  for (const label of parseLabels(filters.labels) || []) params.append("labels", label);
  if (filters.q) params.set("q", filters.q);
  if (withPage && filters.page > 1) params.set("page", String(filters.page));
  return params;
}

// The filters as `api()` takes a query: lists for repeated parameters.
function queryParams(filters) {
  const params = queryOf(filters, { withPage: false });
  return Object.fromEntries([...new Set(params.keys())].map((key) => [key, params.getAll(key)]));
}

function hrefOf(filters) {
  const query = queryOf(filters).toString();
  return `/ui/executions${query ? `?${query}` : ""}`;
}

// An ISO instant <-> the value of a datetime-local control (the user's own time zone).
function fromLocalInput(value) {
  const date = new Date(value);
  return value && !Number.isNaN(date.getTime()) ? date.toISOString() : "";
}

// ------------------------------------------------------------------ formatting

function shortId(id) {
  return id.length > 8 ? `${id.slice(0, 8)}…` : id;
}

// Today's dates as a time, others with their day: the list stays narrow.
function shortDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  const options = sameDay ? { timeStyle: "medium" } : { dateStyle: "medium", timeStyle: "short" };
  return date.toLocaleString(undefined, options);
}

function runningDuration(execution) {
  const { startDate, endDate } = execution.state || {};
  return duration(startDate || execution.createdAt, endDate);
}

function labelBadges(labels) {
  return Object.entries(labels || {}).map(([key, value]) => h("span", { class: "badge label-badge", title: `${key}:${value}` }, `${key}:${value}`));
}

// ------------------------------------------------------------------ the table

function executionRow(execution) {
  const state = execution.state?.current || "CREATED";
  const ended = TERMINAL_STATES.has(state);
  const flowLink = flowHref(execution.namespace, execution.flowId);
  const durationCell = h("td", { class: "num" }, formatDuration(runningDuration(execution)));
  if (!ended) durationCell.dataset.ticking = "true";
  const row = h(
    "tr",
    { dataset: { id: execution.id, version: execution.updatedAt || "", state } },
    h("td", { class: "mono" }, h("a", { href: `/ui/executions/${encodeURIComponent(execution.id)}`, title: execution.id, dataset: { focusKey: `exec-${execution.id}` } }, shortId(execution.id))),
    h("td", { class: "ellipsis", title: execution.namespace }, execution.namespace),
    h("td", { class: "ellipsis" }, h("a", { href: flowLink, title: `${execution.namespace}/${execution.flowId}`, dataset: { focusKey: `flow-${execution.id}` } }, execution.flowId)),
    h("td", {}, stateBadge(state)),
    h("td", { class: "labels-cell" }, labelBadges(execution.labels)),
    h("td", { class: "nowrap", title: execution.createdAt }, shortDate(execution.createdAt)),
    durationCell,
    h("td", { class: "muted" }, execution.trigger?.type || "—"),
  );
  row.execution = execution;
  return row;
}

// Puts `executions` in `tbody`, reusing the rows whose execution did not change and
// moving only those out of place, so that a focused link keeps its focus.
function updateRows(tbody, executions) {
  const existing = new Map([...tbody.children].map((row) => [row.dataset.id, row]));
  const focusKey = document.activeElement?.dataset?.focusKey;
  executions.forEach((execution, index) => {
    let row = existing.get(execution.id);
    existing.delete(execution.id);
    if (!row || row.dataset.version !== (execution.updatedAt || "") || row.dataset.state !== execution.state?.current) {
      const fresh = executionRow(execution);
      if (row) row.replaceWith(fresh);
      row = fresh;
    }
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
  });
  for (const row of existing.values()) row.remove();
  if (focusKey && document.activeElement === document.body) {
    tbody.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)?.focus();
  }
}

function tickDurations(tbody) {
  for (const cell of tbody.querySelectorAll("td[data-ticking]")) {
    cell.textContent = formatDuration(runningDuration(cell.parentElement.execution));
  }
}

// ------------------------------------------------------------------ the filter form

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function stateChips(selected, onChange) {
  const boxes = STATES.map((state) => {
    const box = h("input", { type: "checkbox", id: `exf-state-${state.toLowerCase()}`, value: state, checked: selected.includes(state) });
    box.addEventListener("change", onChange);
    return h("label", { class: `state-chip chip-${state.toLowerCase()}`, for: box.id }, box, h("span", {}, state));
  });
  return h("fieldset", { class: "state-chips" }, h("legend", {}, "State"), boxes);
}

async function knownFlows(signal) {
  try {
    const answer = await api("flows", { query: { size: 1000 }, signal });
    return answer.results || [];
  } catch {
    return []; // the filters still work typed by hand
  }
}

// Every namespace the flows use, with their parents (the filter takes a prefix).
function namespacesOf(flows, current) {
  const names = new Set(current ? [current] : []);
  for (const flow of flows) {
    const parts = flow.namespace.split(".");
    for (let i = 1; i <= parts.length; i++) names.add(parts.slice(0, i).join("."));
  }
  return [...names].sort();
}

function buildFilters(filters, flows, onChange) {
  const namespace = h("select", { id: "exf-namespace" }, h("option", { value: "" }, "All namespaces"), namespacesOf(flows, filters.namespace).map((ns) => h("option", { value: ns }, ns)));
  namespace.value = filters.namespace;
  const flowList = h("datalist", { id: "exf-flows" });
  const flow = h("input", { id: "exf-flow", type: "text", list: "exf-flows", value: filters.flowId, placeholder: "Any flow", autocomplete: "off", spellcheck: "false" });
  const fillFlows = () => {
    const ns = namespace.value;
    const ids = new Set(flows.filter((f) => !ns || f.namespace === ns || f.namespace.startsWith(`${ns}.`)).map((f) => f.id));
    clear(flowList, [...ids].sort().map((id) => h("option", { value: id })));
  };
  fillFlows();
  const from = h("input", { id: "exf-from", type: "datetime-local", value: toLocalInput(filters.startDate) });
  const to = h("input", { id: "exf-to", type: "datetime-local", value: toLocalInput(filters.endDate) });
  const labels = h("input", { id: "exf-labels", type: "text", value: filters.labels, placeholder: "key:value, …", spellcheck: "false", "aria-describedby": "exf-labels-error" });
  const labelsError = h("small", { id: "exf-labels-error", class: "field-error", hidden: true }, "Write labels as key:value (or key=value)");
  const search = h("input", { id: "exf-search", type: "search", value: filters.q, placeholder: "Id, flow or namespace", spellcheck: "false" });
  const chips = stateChips(filters.state, () => onChange(read(), { now: true }));
  const clearButton = h("button", { type: "button", class: "link clear-filters" }, "Clear filters");

  const read = () => {
    const labelsOk = parseLabels(labels.value) !== null;
    labels.setAttribute("aria-invalid", String(!labelsOk));
    labelsError.hidden = labelsOk;
    return {
      namespace: namespace.value,
      flowId: flow.value.trim(),
      state: [...chips.querySelectorAll("input:checked")].map((box) => box.value),
      startDate: fromLocalInput(from.value),
      endDate: fromLocalInput(to.value),
      labels: labelsOk ? labels.value.trim() : null, // null: keep the last valid labels
      q: search.value.trim(),
      page: 1,
    };
  };
  namespace.addEventListener("change", () => {
    fillFlows();
    onChange(read(), { now: true });
  });
  for (const control of [from, to]) control.addEventListener("change", () => onChange(read(), { now: true }));
  for (const control of [flow, labels, search]) control.addEventListener("input", () => onChange(read(), { now: false }));
  clearButton.addEventListener("click", () => {
    namespace.value = flow.value = from.value = to.value = labels.value = search.value = "";
    for (const box of chips.querySelectorAll("input")) box.checked = false;
    fillFlows();
    onChange(read(), { now: true });
  });

  const form = h(
    "form",
    { class: "exec-filters", role: "search", "aria-label": "Filter executions" },
    h(
      "div",
      { class: "filters" },
      h("div", { class: "field grow" }, h("label", { for: search.id }, "Search"), search),
      field(namespace.id, "Namespace", namespace),
      field(flow.id, "Flow", flow),
      flowList,
      h("div", { class: "field" }, h("label", { for: labels.id }, "Labels"), labels, labelsError),
      field(from.id, "From", from),
      field(to.id, "To", to),
    ),
    h("div", { class: "filters-row" }, chips, clearButton),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onChange(read(), { now: true });
  });
  return form;
}

// ------------------------------------------------------------------ the page

export async function render(main, _params, ctx) {
  ctx.setTitle("Executions");
  let filters = filtersFromQuery(ctx.query);
  const flows = await knownFlows(ctx.signal);
  if (ctx.signal.aborted) return;

  const count = h("span", { class: "muted exec-count", "aria-live": "polite" }, "");
  const live = h("span", { class: "exec-live", title: "Updates live while this tab is visible" }, "Live");
  const status = h("div", { class: "exec-status" });
  const tbody = h("tbody", {});
  const empty = h("div", { class: "empty", hidden: true });
  const table = h(
    "table",
    { class: "list exec-list", "aria-label": "Executions, newest first" },
    h("thead", {}, h("tr", {}, ["Id", "Namespace", "Flow", "State", "Labels", "Created", "Duration", "Trigger"].map((name) => h("th", { scope: "col", class: name === "Duration" ? "num" : null }, name)))),
    tbody,
  );
  const previous = h("button", { type: "button" }, "Previous");
  const next = h("button", { type: "button" }, "Next");
  const pageText = h("span", { class: "muted" }, "");
  let total = 0;
  let timer = null;
  let inFlight = null; // {controller, promise} of the request on its way

  // Loads the page the filters say. A refresh skips while a request is on its way; a
  // change of filters aborts it (its answer would show the old filters).
  const load = ({ refresh = false } = {}) => {
    if (inFlight && refresh) return inFlight.promise;
    inFlight?.controller.abort();
    const controller = new AbortController();
    const signal = AbortSignal.any([ctx.signal, controller.signal]);
    const query = { ...queryParams(filters), page: filters.page, size: PAGE_SIZE };
    const promise = api("executions", { query, signal })
      .then((answer) => {
        clear(status);
        total = answer.total ?? 0;
        updateRows(tbody, answer.results || []);
        showCounts();
        if (!answer.results?.length && total > 0 && filters.page > 1) {
          // Past the last page (executions were deleted meanwhile): go to the last one.
          setPage(Math.ceil(total / PAGE_SIZE), { replace: true });
        }
      })
      .catch((error) => {
        if (!signal.aborted) clear(status, errorBox(error));
      })
      .finally(() => {
        if (inFlight?.controller === controller) inFlight = null;
      });
    inFlight = { controller, promise };
    return promise;
  };

  const showCounts = () => {
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    count.textContent = `${total.toLocaleString()} ${total === 1 ? "execution" : "executions"}`;
    pageText.textContent = `Page ${filters.page} of ${pages.toLocaleString()}`;
    previous.disabled = filters.page <= 1;
    next.disabled = filters.page >= pages;
    const filtered = queryOf(filters, { withPage: false }).toString() !== "";
    empty.hidden = total > 0;
    table.hidden = total === 0;
    if (filtered) clear(empty, "No execution matches these filters.");
    else clear(empty, "No executions yet: start one from a flow's page. ", h("a", { href: "/ui/flows" }, "Go to flows"));
  };

  // A new history entry per page turned, so that Back returns to the page before.
  const setPage = (page, { replace = false } = {}) => {
    filters = { ...filters, page };
    if (replace) history.replaceState(null, "", hrefOf(filters));
    else history.pushState(null, "", hrefOf(filters));
    load();
  };
  previous.addEventListener("click", () => setPage(filters.page - 1));
  next.addEventListener("click", () => setPage(filters.page + 1));

  const onFilters = (changed, { now }) => {
    filters = { ...changed, labels: changed.labels ?? filters.labels };
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (ctx.signal.aborted) return;
      history.replaceState(null, "", hrefOf(filters));
      load();
    }, now ? 0 : TYPING_DEBOUNCE_MS);
  };

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Executions"), count, h("span", { class: "spacer" }), live),
    buildFilters(filters, flows, onFilters),
    status,
    h("div", { class: "table-wrap" }, table),
    empty,
    h("nav", { class: "pager", "aria-label": "Pages" }, pageText, previous, next),
  );
  await load();
  refreshWhileVisible(ctx.signal, load, tbody, live);
}

// Reloads the page on screen every REFRESH_MS while the tab is visible (at once when it
// becomes visible again) and ticks running durations each second.
function refreshWhileVisible(signal, load, tbody, live) {
  const onVisible = () => {
    live.classList.toggle("paused", document.visibilityState !== "visible");
    if (document.visibilityState === "visible") load({ refresh: true });
  };
  document.addEventListener("visibilitychange", onVisible);
  const ticker = setInterval(() => tickDurations(tbody), 1000);
  signal.addEventListener("abort", () => {
    document.removeEventListener("visibilitychange", onVisible);
    clearInterval(ticker);
  });
  (async () => {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      if (!signal.aborted && document.visibilityState === "visible") await load({ refresh: true });
    }
  })();
}
