// Home (/): a welcome with counts, the flows changed last, the latest executions (live,
// every 3 s while the tab is visible), and quick links. With no flow yet it shows how to
// get a first one (a blueprint, `headrace flow apply examples/`, or the editor).

import { api } from "../api.js";
import { clear, duration, errorBox, flowHref, formatDate, formatDuration, h, link, relativeTime, sleep, stateBadge, TERMINAL_STATES } from "../dom.js";
import { parseYaml } from "../components/yaml_value.js";

const REFRESH_MS = 3000;
const SHOWN = 10;

export async function render(main, _params, { signal, setTitle }) {
  setTitle("Home");
  const [flows, executions] = await Promise.all([
    api("flows", { query: { size: 1000 }, signal }),
    api("executions", { query: { size: SHOWN }, signal }),
  ]);
  const flowList = flows.results || [];
  const summary = h("p", { class: "home-summary" });
  const executionsBody = h("div", { class: "home-executions" });

  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Home"),
      h("span", { class: "spacer" }),
      h("nav", { class: "home-quick", "aria-label": "Quick links" }, h("a", { class: "button primary", href: "/ui/flows/new" }, "New flow"), h("a", { class: "button", href: "/ui/blueprints" }, "Blueprints"), h("a", { class: "button", href: "/ui/dashboard" }, "Dashboard")),
    ),
    h("div", { class: "card home-welcome" }, h("p", { class: "home-hello" }, "Welcome to headrace: write flows in YAML, run them on events and schedules, and watch every task run here."), summary),
  );

  if (!flowList.length) main.append(firstRun());
  main.append(
    h(
      "div",
      { class: "home-columns" },
      h(
        "section",
        { class: "card home-section", "aria-labelledby": "home-flows-title" },
        h("div", { class: "home-section-head" }, h("h2", { id: "home-flows-title" }, "Flows"), h("span", { class: "spacer" }), link("/ui/flows", "All flows")),
        recentFlows(flowList),
      ),
      h(
        "section",
        { class: "card home-section", "aria-labelledby": "home-executions-title" },
        h("div", { class: "home-section-head" }, h("h2", { id: "home-executions-title" }, "Recent executions"), h("span", { class: "live-dot", title: "Updates live", "aria-hidden": "true" }), h("span", { class: "spacer" }), link("/ui/executions", "All executions")),
        executionsBody,
      ),
    ),
  );

  const namespaces = new Set(flowList.map((f) => f.namespace));
  let running = null;
  const drawSummary = (total) => {
    clear(
      summary,
      count(flows.total ?? flowList.length, "flow"),
      " in ",
      count(namespaces.size, "namespace"),
      " · ",
      count(total, "execution"),
      " stored",
      running === null ? "" : [" · ", h("strong", {}, String(running)), " running now"],
    );
  };
  const drawExecutions = (answer) => {
    keepFocus(executionsBody, () => clear(executionsBody, recentExecutions(answer.results || [])));
    drawSummary(answer.total ?? 0);
  };
  drawExecutions(executions);

  // Live: the latest executions and the running count, while the page is shown and visible.
  const refresh = async () => {
    try {
      const [latest, active] = await Promise.all([
        api("executions", { query: { size: SHOWN }, signal }),
        api("executions", { query: { size: 1, state: "RUNNING" }, signal }),
      ]);
      if (signal.aborted) return;
      running = active.total ?? 0;
      drawExecutions(latest);
    } catch (error) {
      if (!signal.aborted) keepFocus(executionsBody, () => clear(executionsBody, errorBox(error)));
    }
  };
  refresh();
  (async () => {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      if (!signal.aborted && document.visibilityState === "visible") await refresh();
    }
  })();
}

function count(n, noun) {
  return [h("strong", {}, String(n)), ` ${noun}${n === 1 ? "" : "s"}`];
}

function keepFocus(root, rebuild) {
  const active = document.activeElement;
  const key = root.contains(active) ? active?.dataset?.focusKey : null;
  rebuild();
  if (key) root.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
}

function description(flow) {
  try {
    const parsed = flow.source ? parseYaml(flow.source) : null;
    return typeof parsed?.description === "string" ? parsed.description : "";
  } catch {
    return "";
  }
}

function recentFlows(flows) {
  if (!flows.length) return h("p", { class: "empty" }, "No flows yet.");
  const latest = [...flows].sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || ""))).slice(0, SHOWN);
  return h(
    "ul",
    { class: "home-list" },
    latest.map((flow) => {
      const text = description(flow);
      return h(
        "li",
        { class: "home-row" },
        h(
          "div",
          { class: "home-main" },
          h("a", { href: flowHref(flow.namespace, flow.id), class: "home-flow-link" }, flow.id),
          h("span", { class: "muted home-ns" }, flow.namespace),
          text ? h("span", { class: "home-desc muted", title: text }, text) : null,
        ),
        h("span", { class: "home-meta muted", title: formatDate(flow.createdAt) }, `rev ${flow.revision} · ${relativeTime(flow.createdAt)}`),
      );
    }),
  );
}

function recentExecutions(executions) {
  if (!executions.length) return h("p", { class: "empty" }, "No executions yet: start a flow from its page.");
  return h(
    "table",
    { class: "list home-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Execution"), h("th", { scope: "col" }, "Flow"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Started"), h("th", { scope: "col", class: "num" }, "Duration"))),
    h(
      "tbody",
      {},
      executions.map((execution) => {
        const state = execution.state?.current ?? "CREATED";
        const start = execution.state?.startDate || execution.createdAt;
        const end = TERMINAL_STATES.has(state) ? execution.state?.endDate : null;
        return h(
          "tr",
          {},
          h("td", {}, h("a", { class: "mono", href: `/ui/executions/${encodeURIComponent(execution.id)}`, title: execution.id, dataset: { focusKey: `ex-${execution.id}` } }, execution.id.slice(0, 8))),
          h("td", { class: "home-flow-cell" }, h("a", { href: flowHref(execution.namespace, execution.flowId), dataset: { focusKey: `exflow-${execution.id}` } }, execution.flowId), h("span", { class: "muted" }, ` ${execution.namespace}`)),
          h("td", {}, stateBadge(state)),
          h("td", { title: formatDate(start) }, relativeTime(start)),
          h("td", { class: "num" }, formatDuration(duration(start, end))),
        );
      }),
    ),
  );
}

function firstRun() {
  return h(
    "section",
    { class: "card home-first", "aria-labelledby": "home-first-title" },
    h("h2", { id: "home-first-title" }, "Get your first flow"),
    h(
      "ol",
      { class: "home-steps" },
      h("li", {}, h("strong", {}, "Start from a blueprint: "), "pick one in ", link("/ui/blueprints", "Blueprints"), " and copy it into a namespace with one click."),
      h("li", {}, h("strong", {}, "Or apply the examples "), "from a checkout: ", h("code", {}, "headrace flow apply examples/")),
      h("li", {}, h("strong", {}, "Or write one: "), link("/ui/flows/new", "open the editor"), ", with completion and validation as you type."),
    ),
  );
}
