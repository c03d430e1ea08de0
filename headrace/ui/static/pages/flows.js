// The flows list (/ui/flows): every flow's latest revision (`GET /api/v1/flows`, all
// pages), filtered in the page by namespace and by a search over id, namespace and
// description. Filters live in the URL (`?namespace=&q=`) so a filtered list can be
// shared. Descriptions, task counts and trigger types are read from each flow's YAML
// (the listing carries sources, not parsed fields).

import { api } from "../api.js";
import { clear, flowHref, formatDate, h, relativeTime } from "../dom.js";
import { parseYaml } from "../components/yaml_value.js";

const PAGE_SIZE = 1000; // the API's maximum: one request for most installations

export async function render(main, _params, { signal, query, setTitle }) {
  setTitle("Flows");
  const flows = (await loadFlows(signal)).map(outline);
  const namespaces = [...new Set(flows.map((f) => f.namespace))].sort();

  const search = h("input", { id: "flows-search", type: "search", placeholder: "id, namespace or description", autocomplete: "off", value: query.get("q") || "" });
  const namespace = h(
    "select",
    { id: "flows-namespace" },
    h("option", { value: "" }, "All namespaces"),
    namespaces.map((ns) => h("option", { value: ns }, ns)),
  );
  namespace.value = namespaces.includes(query.get("namespace")) ? query.get("namespace") : "";
  const newFlow = h("a", { class: "button primary", href: newFlowHref(namespace.value) }, "New flow");
  const count = h("p", { class: "muted flows-count", "aria-live": "polite" });
  const results = h("div", { class: "flows-results" });

  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Flows"),
      h("span", { class: "spacer" }),
      newFlow,
    ),
    h(
      "div",
      { class: "filters flows-filters", role: "search" },
      h("div", { class: "field grow" }, h("label", { for: "flows-search" }, "Search flows"), search),
      h("div", { class: "field" }, h("label", { for: "flows-namespace" }, "Namespace"), namespace),
      count,
    ),
    results,
  );

  const update = () => {
    const shown = filter(flows, namespace.value, search.value);
    const params = new URLSearchParams();
    if (search.value.trim()) params.set("q", search.value.trim());
    if (namespace.value) params.set("namespace", namespace.value);
    const href = `/ui/flows${params.size ? `?${params}` : ""}`;
    if (location.pathname + location.search !== href) history.replaceState(null, "", href);
    newFlow.setAttribute("href", newFlowHref(namespace.value));
    count.textContent = flows.length ? `${shown.length} of ${flows.length} flow${flows.length === 1 ? "" : "s"}` : "";
    if (!flows.length) clear(results, emptyState());
    else if (!shown.length) clear(results, noMatch(() => {
      search.value = "";
      namespace.value = "";
      update();
      search.focus();
    }));
    else clear(results, flowTable(shown));
  };
  search.addEventListener("input", update);
  namespace.addEventListener("change", update);
  update();
}

async function loadFlows(signal) {
  const flows = [];
  for (let page = 1; ; page += 1) {
    const answer = await api("flows", { query: { page, size: PAGE_SIZE }, signal });
    flows.push(...answer.results);
    if (!answer.results.length || flows.length >= answer.total) return flows;
  }
}

// What the list shows of a flow, read from its YAML.
function outline(flow) {
  let parsed = null;
  try {
    parsed = parseYaml(flow.source);
  } catch {
    // an unreadable source: the row shows what the listing gives
  }
  const doc = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  const triggers = Array.isArray(doc.triggers) ? doc.triggers : [];
  return {
    ...flow,
    description: typeof doc.description === "string" ? doc.description.trim() : "",
    tasks: countTasks(doc),
    triggers: triggers.map((t) => (t && typeof t === "object" ? shortType(String(t.type ?? "?")) : "?")),
    disabled: doc.disabled === true,
  };
}

// Kestra's long trigger names read as ours (io.kestra.plugin.core.trigger.Schedule -> schedule).
function shortType(type) {
  if (!type.includes(".")) return type;
  const last = type.split(".").pop();
  return { Trigger: "kafka", RealtimeTrigger: "kafka" }[last] || last.toLowerCase();
}

function filter(flows, namespace, text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  return flows.filter((flow) => {
    if (namespace && flow.namespace !== namespace) return false;
    const haystack = `${flow.namespace} ${flow.id} ${flow.description}`.toLowerCase();
    return words.every((word) => haystack.includes(word));
  });
}

function newFlowHref(namespace) {
  return namespace ? `/ui/flows/new?namespace=${encodeURIComponent(namespace)}` : "/ui/flows/new";
}

function flowTable(flows) {
  return h(
    "table",
    { class: "list flows-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Namespace"),
        h("th", { scope: "col" }, "Flow"),
        h("th", { scope: "col" }, "Description"),
        h("th", { scope: "col", class: "num" }, "Revision"),
        h("th", { scope: "col", class: "num" }, "Tasks"),
        h("th", { scope: "col" }, "Triggers"),
        h("th", { scope: "col" }, "Last change"),
      ),
    ),
    h("tbody", {}, flows.map(flowRow)),
  );
}

function flowRow(flow) {
  const firstLine = flow.description.split("\n")[0];
  return h(
    "tr",
    {},
    h("td", { class: "flows-ns" }, h("a", { class: "ns-link", href: `/ui/flows?namespace=${encodeURIComponent(flow.namespace)}`, title: `Only ${flow.namespace}` }, flow.namespace)),
    h("td", { class: "flows-id" }, h("a", { href: flowHref(flow.namespace, flow.id) }, flow.id), flow.disabled ? h("span", { class: "badge flow-badge-muted" }, "disabled") : null),
    h("td", { class: "flows-desc", title: flow.description || null }, firstLine || h("span", { class: "muted" }, "—")),
    h("td", { class: "num" }, flow.revision),
    h("td", { class: "num" }, flow.tasks),
    h("td", { class: "flows-triggers" }, flow.triggers.length ? flow.triggers.map((t) => h("span", { class: `badge trigger-${t}` }, t)) : h("span", { class: "muted" }, "—")),
    h("td", { class: "flows-date" }, h("time", { datetime: flow.createdAt, title: formatDate(flow.createdAt) }, relativeTime(flow.createdAt))),
  );
}

function emptyState() {
  return h(
    "div",
    { class: "card empty flows-empty" },
    h("p", { class: "flows-empty-title" }, "No flows yet"),
    h("p", {}, "A flow is a YAML file: an id, a namespace and the tasks to run."),
    h(
      "p",
      { class: "row flows-empty-actions" },
      h("a", { class: "button primary", href: "/ui/flows/new" }, "Write your first flow"),
      h("a", { class: "button", href: "/ui/blueprints" }, "Copy a blueprint"),
    ),
    h("p", { class: "muted" }, "Or apply a folder of flows: ", h("code", {}, "headrace flow apply examples/")),
  );
}

function noMatch(reset) {
  return h(
    "div",
    { class: "card empty" },
    h("p", {}, "No flow matches these filters."),
    h("button", { type: "button", onclick: reset }, "Clear filters"),
  );
}

// Lists below a task that hold typed things other than tasks (a subflow's or a pause's
// inputs).
const NOT_TASKS = new Set(["inputs", "outputs", "onResume", "triggers", "conditions"]);

// The tasks of a flow, nested ones included (tasks, then/else, cases, errors...): every
// mapping with an `id` and a `type` below the task lists of `flow`.
function countTasks(flow) {
  let count = 0;
  const walk = (value) => {
    if (Array.isArray(value)) return value.forEach(walk);
    if (!value || typeof value !== "object") return;
    if (typeof value.id === "string" && typeof value.type === "string") count += 1;
    for (const [key, child] of Object.entries(value)) {
      if (!NOT_TASKS.has(key)) walk(child);
    }
  };
  for (const key of ["tasks", "errors", "finally", "afterExecution"]) walk(flow?.[key]);
  return count;
}
