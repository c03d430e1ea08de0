// The dashboard (/ui/dashboard): operations at a glance from `GET /api/v1/stats?hours=N`.
// What runs now (tiles), executions per state over the window (a stacked bar chart with a
// table alternative), the flows that fail most, and the workers the gateway scrapes.
// Refreshes every 5 s while the tab is visible; the window lives in the URL (?hours=24).

import { api } from "../api.js";
import { clear, errorBox, h, svg, sleep } from "../dom.js";

const WINDOWS = [
  [1, "1 h"],
  [6, "6 h"],
  [24, "24 h"],
  [168, "7 d"],
  [720, "30 d"],
];
const REFRESH_MS = 5000;

// Bottom to top in a bar; states not listed come last.
const STATE_ORDER = ["SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED", "RUNNING", "RETRYING", "KILLING", "PAUSED", "QUEUED", "CREATED"];
const STATE_COLOURS = {
  SUCCESS: "#2e9e4f",
  WARNING: "#d9a400",
  FAILED: "#d0453b",
  KILLED: "#7b4bb0",
  KILLING: "#9a78c6",
  CANCELLED: "#b39bd0",
  SKIPPED: "#a7b0bb",
  RUNNING: "#2f6fc0",
  RETRYING: "#5b8fd3",
  PAUSED: "#e0a526",
  QUEUED: "#8fb3e0",
  CREATED: "#b8cdea",
};

const CHART_H = 240;
const AXIS_LEFT = 44;
const AXIS_BOTTOM = 26;
const CHART_TOP = 10;

export async function render(main, _params, { signal, query, setTitle }) {
  setTitle("Dashboard");
  let hours = Number(query.get("hours"));
  if (!WINDOWS.some(([value]) => value === hours)) hours = 24;
  let showTable = false;
  let last = null;
  const pointer = { hover: null }; // the bucket under the mouse, kept across refreshes
  let generation = 0;

  const updated = h("span", { class: "muted dash-updated", "aria-live": "off" });
  const picker = h("div", { class: "dash-windows", role: "group", "aria-label": "Time window" });
  const tiles = h("div", { class: "dash-tiles" });
  const chart = h("div", { class: "dash-chart-body" });
  const failures = h("div", {});
  const workers = h("div", {});
  const problem = h("div", {});
  const windowName = () => WINDOWS.find(([value]) => value === hours)[1];
  const chartHeading = h("h2", { id: "dash-chart-title" }, "Executions per state");
  const failuresHeading = h("h2", { id: "dash-failures-title" }, "Failures by flow");

  const pickButtons = WINDOWS.map(([value, label]) =>
    h("button", { type: "button", "aria-pressed": String(value === hours), dataset: { hours: value }, onclick: () => choose(value) }, label),
  );
  picker.append(...pickButtons);

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Dashboard"), h("span", { class: "spacer" }), updated, picker),
    problem,
    tiles,
    h("section", { class: "card dash-chart", "aria-labelledby": "dash-chart-title" }, chartHeading, chart),
    h(
      "div",
      { class: "dash-columns" },
      h("section", { class: "card", "aria-labelledby": "dash-failures-title" }, failuresHeading, failures),
      h("section", { class: "card", "aria-labelledby": "dash-workers-title" }, h("h2", { id: "dash-workers-title" }, "Workers"), workers),
    ),
  );

  function choose(value) {
    if (value === hours) return;
    hours = value;
    for (const button of pickButtons) button.setAttribute("aria-pressed", String(Number(button.dataset.hours) === hours));
    const url = new URL(location.href);
    url.searchParams.set("hours", String(hours));
    history.replaceState(null, "", url.pathname + url.search);
    load();
  }

  async function load() {
    const mine = ++generation;
    try {
      const stats = await api("stats", { query: { hours }, signal });
      if (mine !== generation || signal.aborted) return;
      last = stats;
      clear(problem);
      draw(stats);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (signal.aborted || mine !== generation) return;
      const message = error.status === 404 ? new Error("This gateway has no statistics API (GET /api/v1/stats): update headrace.") : error;
      clear(problem, errorBox(message));
    }
  }

  function draw(stats) {
    keepFocus(main, () => {
      clear(tiles, renderTiles(stats, windowName()));
      failuresHeading.textContent = `Failures by flow · last ${windowName()}`;
      chartHeading.textContent = `Executions per state · last ${windowName()}`;
      clear(chart, renderChart(stats, chart.clientWidth || main.clientWidth, { showTable, onToggle, pointer }));
      clear(failures, renderFailures(stats, windowName()));
      clear(workers, renderWorkers(stats.workers));
    });
  }

  function onToggle() {
    showTable = !showTable;
    if (last) draw(last);
  }

  // Redraw the chart at its new width.
  let resizeTimer = null;
  const observer = new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => last && !signal.aborted && draw(last), 150);
  });
  observer.observe(chart);
  const onVisible = () => document.visibilityState === "visible" && load();
  document.addEventListener("visibilitychange", onVisible);
  signal.addEventListener("abort", () => {
    observer.disconnect();
    document.removeEventListener("visibilitychange", onVisible);
  });

  await load();
  (async () => {
    while (!signal.aborted) {
      await sleep(REFRESH_MS, signal);
      if (!signal.aborted && document.visibilityState === "visible") await load();
    }
  })();
}

// Rebuild content in `root` while keeping the focus on the element with the same key.
function keepFocus(root, rebuild) {
  const active = document.activeElement;
  const key = root.contains(active) ? active?.dataset?.focusKey : null;
  rebuild();
  const again = key ? root.querySelector(`[data-focus-key="${CSS.escape(key)}"]`) : null;
  if (!again) return;
  // A bar of the chart: make it the chart's one tab stop again.
  if (again.getAttribute("tabindex") === "-1") {
    for (const other of again.parentNode.querySelectorAll('[tabindex="0"]')) other.setAttribute("tabindex", "-1");
    again.setAttribute("tabindex", "0");
  }
  again.focus({ preventScroll: true });
}

function executionsLink(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) for (const item of [value].flat()) params.append(key, item);
  return `/ui/executions?${params}`;
}

// ---- tiles ----------------------------------------------------------------------------

function renderTiles(stats, windowName) {
  const now = stats.now || {};
  const total = Object.values(stats.states || {}).reduce((a, b) => a + b, 0);
  const failed = stats.states?.FAILED ?? 0;
  const rate = total ? Math.round((100 * failed) / total) : 0;
  const tile = (label, value, { href, kind = "", note = null, key }) =>
    h(
      href ? "a" : "div",
      { class: `dash-tile ${kind}`, href, dataset: { focusKey: key } },
      h("span", { class: "dash-tile-value" }, String(value ?? 0)),
      h("span", { class: "dash-tile-label" }, label),
      note ? h("span", { class: "dash-tile-note muted" }, note) : null,
    );
  return [
    tile("Running", now.running, { href: executionsLink({ state: "RUNNING" }), kind: now.running ? "is-running" : "", key: "tile-running" }),
    tile("Queued", now.queued, { href: executionsLink({ state: ["CREATED", "QUEUED"] }), kind: now.queued ? "is-queued" : "", key: "tile-queued" }),
    tile("Paused", now.paused, { href: executionsLink({ state: "PAUSED" }), kind: now.paused ? "is-paused" : "", key: "tile-paused" }),
    tile("Task runs running", now.taskRunsRunning, { key: "tile-taskruns" }),
    tile(`Executions · ${windowName}`, total, { href: executionsLink({ startDate: stats.from }), key: "tile-total" }),
    tile(`Failed · ${windowName}`, failed, {
      href: executionsLink({ state: "FAILED", startDate: stats.from }),
      kind: failed ? "is-failed" : "",
      note: total ? `${rate}% of executions` : null,
      key: "tile-failed",
    }),
  ];
}

// ---- the chart --------------------------------------------------------------------------

function orderedStates(stats) {
  const seen = new Set();
  for (const bucket of stats.buckets || []) for (const [state, n] of Object.entries(bucket.counts || {})) if (n) seen.add(state);
  const known = STATE_ORDER.filter((s) => seen.has(s));
  return [...known, ...[...seen].filter((s) => !STATE_ORDER.includes(s)).sort()];
}

function niceStep(max, ticks = 4) {
  if (max <= ticks) return 1;
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return Math.max(1, Math.round(step));
}

function bucketFormat(bucketSeconds, spanSeconds) {
  if (bucketSeconds >= 86400) return { month: "short", day: "numeric" };
  if (spanSeconds > 2 * 86400) return { weekday: "short", hour: "2-digit", minute: "2-digit" };
  return { hour: "2-digit", minute: "2-digit" };
}

function describeBucket(bucket, seconds, states) {
  const start = new Date(bucket.start);
  const end = new Date(start.getTime() + seconds * 1000);
  const sameDay = start.toDateString() === end.toDateString() || end - start <= 3600_000;
  const from = start.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const to = end.toLocaleString(undefined, sameDay ? { hour: "2-digit", minute: "2-digit" } : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const counts = states.filter((s) => bucket.counts?.[s]).map((s) => `${bucket.counts[s]} ${s.toLowerCase()}`);
  const total = states.reduce((sum, s) => sum + (bucket.counts?.[s] || 0), 0);
  return { range: `${from} – ${to}`, text: total ? counts.join(", ") : "no executions", total };
}

function renderChart(stats, availableWidth, { showTable, onToggle, pointer = {} }) {
  const buckets = stats.buckets || [];
  const seconds = stats.bucketSeconds || 3600;
  const states = orderedStates(stats);
  const totals = buckets.map((b) => states.reduce((sum, s) => sum + (b.counts?.[s] || 0), 0));
  const max = Math.max(0, ...totals);
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const width = Math.max(360, Math.floor(availableWidth) - 2);
  const plotW = width - AXIS_LEFT - 8;
  const plotH = CHART_H - CHART_TOP - AXIS_BOTTOM;
  const slot = buckets.length ? plotW / buckets.length : plotW;
  const barW = Math.max(2, Math.min(28, slot * 0.72));
  const y = (value) => CHART_TOP + plotH - (value / top) * plotH;
  const span = buckets.length ? (new Date(buckets.at(-1).start) - new Date(buckets[0].start)) / 1000 + seconds : 0;
  const format = bucketFormat(seconds, span);

  const readout = h("p", { class: "dash-readout", "aria-live": "polite" });
  const showTotals = () => {
    const all = Object.entries(stats.states || {}).filter(([, n]) => n);
    clear(readout, h("strong", {}, "Whole window: "), all.length ? legendValues(Object.fromEntries(all), orderedStates({ buckets: [{ counts: stats.states }] })) : "no executions");
  };
  const showBucket = (bucket) => {
    const { range } = describeBucket(bucket, seconds, states);
    clear(readout, h("strong", {}, `${range}: `), totalsOf(bucket, states) ? legendValues(bucket.counts, states) : "no executions");
  };

  const graph = svg("svg", { class: "dash-svg", width, height: CHART_H, viewBox: `0 0 ${width} ${CHART_H}`, role: "group", "aria-label": "Executions per state over time; use the arrow keys to move between bars" });
  // Y axis: grid lines and counts.
  for (let value = 0; value <= top; value += step) {
    graph.append(
      svg("line", { class: "dash-grid", x1: AXIS_LEFT, x2: width - 8, y1: y(value), y2: y(value), "aria-hidden": "true" }),
      svg("text", { class: "dash-axis", x: AXIS_LEFT - 8, y: y(value) + 4, "text-anchor": "end", "aria-hidden": "true" }, String(value)),
    );
  }
  // X axis labels: about one per 90 px.
  const every = Math.max(1, Math.ceil(buckets.length / Math.max(1, Math.floor(plotW / 90))));
  buckets.forEach((bucket, i) => {
    if (i % every) return;
    const x = AXIS_LEFT + slot * i + slot / 2;
    graph.append(svg("text", { class: "dash-axis", x, y: CHART_H - 8, "text-anchor": "middle", "aria-hidden": "true" }, new Date(bucket.start).toLocaleString(undefined, format)));
  });
  // Bars: one focus stop for the chart, the arrow keys move between bars.
  const bars = buckets.map((bucket, i) => {
    const x = AXIS_LEFT + slot * i + (slot - barW) / 2;
    const { range, text } = describeBucket(bucket, seconds, states);
    const bar = svg("g", { class: "dash-bar", tabindex: "-1", role: "img", "aria-label": `${range}: ${text}`, "data-focus-key": `bar-${bucket.start}` });
    bar.append(svg("title", {}, `${range}\n${text}`));
    // A full-height transparent target makes thin bars easy to hover.
    bar.append(svg("rect", { class: "dash-bar-hit", x: AXIS_LEFT + slot * i, y: CHART_TOP, width: slot, height: plotH }));
    let base = 0;
    for (const state of states) {
      const n = bucket.counts?.[state] || 0;
      if (!n) continue;
      bar.append(svg("rect", { x, y: y(base + n), width: barW, height: Math.max(1, y(base) - y(base + n)), fill: STATE_COLOURS[state] || "#8d99a8", class: "dash-seg" }));
      base += n;
    }
    bar.addEventListener("mouseenter", () => {
      pointer.hover = bucket.start;
      showBucket(bucket);
    });
    bar.addEventListener("focus", () => showBucket(bucket));
    return bar;
  });
  graph.append(svg("line", { class: "dash-axis-line", x1: AXIS_LEFT, x2: width - 8, y1: y(0), y2: y(0), "aria-hidden": "true" }), ...bars);
  graph.addEventListener("mouseleave", () => {
    pointer.hover = null;
    showTotals();
  });
  graph.addEventListener("focusout", (event) => !graph.contains(event.relatedTarget) && showTotals());
  roving(bars);
  const hovered = buckets.find((b) => b.start === pointer.hover);
  if (hovered) showBucket(hovered);
  else showTotals();

  const legend = h(
    "ul",
    { class: "dash-legend", "aria-label": "States" },
    states.map((s) => h("li", {}, h("span", { class: "dash-swatch", style: `background:${STATE_COLOURS[s] || "#8d99a8"}`, "aria-hidden": "true" }), s.toLowerCase())),
  );
  const toggle = h(
    "button",
    { type: "button", class: "link", "aria-expanded": String(showTable), "aria-controls": "dash-chart-table", dataset: { focusKey: "chart-toggle" }, onclick: onToggle },
    showTable ? "Hide table" : "Show as table",
  );
  const table = renderChartTable(buckets, seconds, states);
  table.hidden = !showTable;
  const empty = !max ? h("p", { class: "dash-chart-empty muted" }, "No executions were created in this window.") : null;
  return [h("div", { class: "dash-chart-bar" }, legend, h("span", { class: "spacer" }), toggle), h("div", { class: "dash-plot" }, graph, empty), readout, table];
}

function totalsOf(bucket, states) {
  return states.reduce((sum, s) => sum + (bucket.counts?.[s] || 0), 0);
}

function legendValues(counts, states) {
  return states
    .filter((s) => counts?.[s])
    .map((s) => h("span", { class: "dash-value" }, h("span", { class: "dash-swatch", style: `background:${STATE_COLOURS[s] || "#8d99a8"}`, "aria-hidden": "true" }), `${counts[s]} ${s.toLowerCase()}`));
}

// One tab stop for a row of bars; arrows, Home and End move the focus among them.
function roving(bars) {
  if (!bars.length) return;
  const lastWithData = [...bars].reverse().find((bar) => bar.querySelector(".dash-seg")) || bars.at(-1);
  lastWithData.setAttribute("tabindex", "0");
  bars.forEach((bar, i) => {
    bar.addEventListener("keydown", (event) => {
      const target = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: bars.length - 1 }[event.key];
      if (target === undefined || !bars[target]) return;
      event.preventDefault();
      bar.setAttribute("tabindex", "-1");
      bars[target].setAttribute("tabindex", "0");
      bars[target].focus();
    });
  });
}

function renderChartTable(buckets, seconds, states) {
  const columns = states.length ? states : ["SUCCESS"];
  return h(
    "div",
    { class: "dash-table-wrap", id: "dash-chart-table" },
    h(
      "table",
      { class: "list dash-table" },
      h("caption", { class: "muted" }, "Executions created per interval, by current state"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Interval"), columns.map((s) => h("th", { scope: "col", class: "num" }, s.toLowerCase())), h("th", { scope: "col", class: "num" }, "Total"))),
      h(
        "tbody",
        {},
        buckets.map((bucket) => {
          const { range, total } = describeBucket(bucket, seconds, columns);
          return h("tr", {}, h("th", { scope: "row" }, range), columns.map((s) => h("td", { class: "num" }, String(bucket.counts?.[s] || 0))), h("td", { class: "num" }, String(total)));
        }),
      ),
    ),
  );
}

// ---- failures by flow -------------------------------------------------------------------

function renderFailures(stats, windowName) {
  const rows = stats.failuresByFlow || [];
  if (!rows.length) return h("p", { class: "dash-empty muted" }, `No failed executions in the last ${windowName}.`);
  const most = Math.max(...rows.map((r) => r.failed));
  return h(
    "ol",
    { class: "dash-ranked" },
    rows.map((row) => {
      const share = row.total ? Math.round((100 * row.failed) / row.total) : 0;
      const href = executionsLink({ namespace: row.namespace, flowId: row.flowId, state: "FAILED", startDate: stats.from });
      return h(
        "li",
        {},
        h(
          "div",
          { class: "dash-ranked-head" },
          h("a", { href, dataset: { focusKey: `fail-${row.namespace}/${row.flowId}` } }, h("span", { class: "muted" }, `${row.namespace}.`), row.flowId),
          h("span", { class: "dash-ranked-count" }, h("strong", {}, String(row.failed)), ` failed of ${row.total} · ${share}%`),
        ),
        h("div", { class: "dash-track", "aria-hidden": "true" }, h("div", { class: "dash-fill", style: `width:${Math.max(2, (100 * row.failed) / most)}%` })),
      );
    }),
  );
}

// ---- workers --------------------------------------------------------------------------

function renderWorkers(workers) {
  if (!workers?.configured) {
    return h(
      "div",
      { class: "dash-howto" },
      h("p", {}, "Worker activity comes from the services' Prometheus metrics, which this gateway does not scrape yet."),
      h("p", {}, "Start the local server with metrics: ", h("code", {}, "headrace server local --metrics-port 9100")),
      h("p", {}, "or give the gateway the services' metrics addresses: ", h("code", {}, "HEADRACE_METRICS_TARGETS=http://worker-1:9100,http://worker-2:9100")),
    );
  }
  const services = workers.services || [];
  if (!services.length) return h("p", { class: "dash-empty muted" }, "No metrics targets answered.");
  return h(
    "ul",
    { class: "dash-services" },
    services.map((service, i) => {
      // Only workers have task slots: other services report 0 (or nothing).
      const slots = typeof service.slots === "number" && (service.slots > 0 || service.service === "worker") ? service.slots : null;
      const attempts = typeof service.attemptsDone === "number" && (slots !== null || service.attemptsDone > 0) ? service.attemptsDone : null;
      const used = typeof service.slotsInUse === "number" ? service.slotsInUse : 0;
      const meterId = `dash-meter-${i}`;
      return h(
        "li",
        { class: `dash-service ${service.up ? "up" : "down"}` },
        h(
          "div",
          { class: "dash-service-head" },
          h("span", { class: `dash-status ${service.up ? "up" : "down"}` }, service.up ? "up" : "down"),
          h("strong", {}, service.service || "service"),
          service.version ? h("span", { class: "muted" }, `v${String(service.version).replace(/^v/, "")}`) : null,
          h("span", { class: "spacer" }),
          h("code", { class: "muted dash-url", title: service.url }, service.url),
        ),
        !service.up
          ? h("p", { class: "dash-error" }, service.error || "did not answer")
          : slots !== null || attempts !== null
            ? h(
              "div",
              { class: "dash-service-body" },
              slots !== null
                ? h(
                    "div",
                    { class: "dash-slots" },
                    h("label", { for: meterId }, "Slots in use"),
                    h("meter", { id: meterId, min: "0", max: String(Math.max(slots, 1)), value: String(used), high: String(Math.max(slots, 1) * 0.85) }),
                    h("span", { class: "dash-slots-text" }, `${used} of ${slots}`),
                  )
                : null,
              attempts !== null ? h("span", { class: "dash-attempts" }, h("strong", {}, String(attempts)), " attempts done") : null,
            )
            : null,
      );
    }),
  );
}
