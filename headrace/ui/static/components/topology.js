// A flow's tasks drawn as an SVG graph, laid out by hand: a list of tasks stacks top to
// bottom with arrows, parallel lanes and if/switch branches stand side by side (branches
// with their labels), containers are labelled frames around their children, a dag is
// drawn in layers with its dependsOn edges; the flow's triggers enter at the top and its
// `errors`, `finally` and `afterExecution` lists follow the tasks.
//
// renderTopology(container, flow, {states, onSelect, navigate}) -> {setStates, select, fit}
//   flow: as `GET /api/v1/flows/{ns}/{id}` answers it (tasks, errors, finally, triggers…);
//   states: {taskId: state} colours the nodes (call setStates again to update them live);
//   onSelect(taskId, task): called on click / Enter on a node.
// Every node is focusable, named "task <id> (<type>)", with the task's description as title.

import { h, svg } from "../dom.js";

// Kestra's names of the flowable types -> ours (nested tasks keep the name as written).
const FLOWABLE_ALIASES = {
  Sequential: "flow.sequential",
  Parallel: "flow.parallel",
  Dag: "flow.dag",
  If: "flow.if",
  Switch: "flow.switch",
  ForEach: "flow.foreach",
  EachSequential: "flow.eachsequential",
  EachParallel: "flow.eachparallel",
  AllowFailure: "flow.allowfailure",
  WorkingDirectory: "flow.workingdirectory",
  Subflow: "flow.subflow",
  Flow: "flow.subflow",
  Pause: "flow.pause",
  Fail: "flow.fail",
  Exit: "flow.exit",
};
const KESTRA_PREFIXES = ["io.kestra.plugin.core.flow.", "io.kestra.core.tasks.flows.", "io.kestra.plugin.core.execution.", "io.kestra.core.tasks.executions."];
const TRIGGER_ALIASES = { Schedule: "schedule", Webhook: "webhook", Flow: "flow" };

// Sizes, in SVG units (1 unit = 1 px at 100 %).
const NODE_H = 50;
const NODE_H_EXTRA = 66;
const MIN_W = 150;
const MAX_W = 250;
const GAP_Y = 30; // between the items of a list: room for an arrow
const GAP_X = 22; // between lanes
const PAD = 14; // inside a frame
const FORK_H = 24;
const LABEL_H = 20;
const JOIN_H = 20;
const DAG_GAP = 40;
const MARGIN = 16;
const GRID_AFTER = 6; // a parallel of more plain tasks than this wraps them in rows
const GRID_GAP = 16;
const ZOOMS = [0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.25, 1.5, 2];
const FIT_MIN = 0.75; // below this text is too small to read: scroll instead

const FONT_ID = "600 13px";
const FONT_SMALL = "12px";
const FONT_LABEL = "600 11px";

let instances = 0;

export function canonicalType(type) {
  const name = String(type ?? "");
  for (const prefix of KESTRA_PREFIXES) {
    if (name.startsWith(prefix)) return FLOWABLE_ALIASES[name.slice(prefix.length)] ?? name;
  }
  return name;
}

// A type as shown on a node: Kestra's long names keep their last two parts.
function shortType(type) {
  const name = String(type ?? "?");
  if (!name.startsWith("io.kestra.")) return name;
  return `…${name.split(".").slice(-2).join(".")}`;
}

function triggerType(type) {
  const name = String(type ?? "");
  const match = /^io\.kestra\.(?:plugin\.core|core\.tasks)\.triggers?\.(\w+)$/.exec(name);
  return match ? (TRIGGER_ALIASES[match[1]] ?? name) : name;
}

// ---- text measuring -------------------------------------------------------------------

let measureContext = null;
let families = null;

function fontFamilies() {
  if (!families) {
    const style = getComputedStyle(document.body);
    const mono = getComputedStyle(document.documentElement).getPropertyValue("--mono").trim();
    families = { sans: style.fontFamily || "sans-serif", mono: mono || "monospace" };
  }
  return families;
}

function textWidth(text, font, mono = false) {
  measureContext ??= document.createElement("canvas").getContext("2d");
  const { sans, mono: monoFamily } = fontFamilies();
  measureContext.font = `${font} ${mono ? monoFamily : sans}`;
  return measureContext.measureText(text).width;
}

// `text` cut with an ellipsis so that it fits in `width`.
function fit(text, width, font, mono = false) {
  const value = String(text ?? "");
  if (textWidth(value, font, mono) <= width + 0.5) return value;
  let low = 0;
  let high = value.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (textWidth(`${value.slice(0, middle)}…`, font, mono) <= width) low = middle;
    else high = middle - 1;
  }
  return `${value.slice(0, low)}…`;
}

function short(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// ---- drawing helpers ------------------------------------------------------------------

function curve(x1, y1, x2, y2) {
  if (Math.abs(x1 - x2) < 0.5) return `M${x1},${y1} V${y2}`;
  const middle = (y2 - y1) / 2;
  return `M${x1},${y1} C${x1},${y1 + middle} ${x2},${y2 - middle} ${x2},${y2}`;
}

// Down, across at `turn`, down again, with rounded corners: forks and joins of lanes.
function elbow(x1, y1, x2, y2, turn) {
  if (Math.abs(x1 - x2) < 0.5) return `M${x1},${y1} V${y2}`;
  const r = Math.min(6, Math.abs(x2 - x1) / 2, Math.abs(turn - y1), Math.abs(y2 - turn));
  const dx = x2 > x1 ? r : -r;
  return `M${x1},${y1} V${turn - r} Q${x1},${turn} ${x1 + dx},${turn} H${x2 - dx} Q${x2},${turn} ${x2},${turn + r} V${y2}`;
}

function edge(g, builder, x1, y1, x2, y2, { arrow = true, kind = "", turn = null } = {}) {
  g.append(
    svg("path", {
      class: `topo-edge ${kind}`,
      d: turn === null ? curve(x1, y1, x2, y2) : elbow(x1, y1, x2, y2, turn),
      "marker-end": arrow ? `url(#${builder.arrowId})` : null,
      "aria-hidden": "true",
    }),
  );
}

function text(x, y, value, className, extra = {}) {
  return svg("text", { x, y, class: className, ...extra }, value);
}

function pill(g, cx, cy, label, kind = "") {
  const width = textWidth(label, FONT_LABEL) + 14;
  g.append(
    svg(
      "g",
      { class: `topo-pill ${kind}`, "aria-hidden": "true" },
      svg("rect", { x: cx - width / 2, y: cy - LABEL_H / 2, width, height: LABEL_H, rx: LABEL_H / 2 }),
      text(cx, cy + 4, label, "topo-pill-text", { "text-anchor": "middle" }),
    ),
  );
}

// ---- blocks ---------------------------------------------------------------------------
// A block is {w, h, entry, draw(g, x, y)}: drawn with its top-left corner at (x, y); edges
// enter it at its top centre and leave at its bottom centre. `entry` says whether an edge
// into it ends at a node ("node": with an arrowhead) or at a fork of lanes ("fork").

function sequence(builder, blocks) {
  if (blocks.length === 1) return blocks[0];
  const w = Math.max(...blocks.map((b) => b.w));
  const h = blocks.reduce((sum, b) => sum + b.h, 0) + GAP_Y * (blocks.length - 1);
  return {
    w,
    h,
    entry: blocks[0].entry,
    draw(g, x, y) {
      const cx = x + w / 2;
      let top = y;
      blocks.forEach((block, i) => {
        if (i > 0) edge(g, builder, cx, top - GAP_Y, cx, top, { arrow: block.entry === "node" });
        block.draw(g, cx - block.w / 2, top);
        top += block.h + GAP_Y;
      });
    },
  };
}

// A lane that holds nothing (an `if` without `else`, the success side of `errors`).
function passthrough() {
  return { w: 70, h: 0, entry: "none", empty: true, draw() {} };
}

// Lanes side by side: a fork from the top centre, an optional label per lane, a join at
// the bottom centre.
function lanes(builder, items, { kind = "" } = {}) {
  if (items.length === 1 && !items[0].label) return items[0].block;
  const labelled = items.some((item) => item.label);
  const widths = items.map((item) => Math.max(item.block.w, item.label ? textWidth(item.label, FONT_LABEL) + 24 : 0));
  const w = widths.reduce((a, b) => a + b, 0) + GAP_X * (items.length - 1);
  const top = FORK_H + (labelled ? LABEL_H + 10 : 0);
  const tallest = Math.max(...items.map((item) => item.block.h));
  const h = top + tallest + JOIN_H;
  return {
    w,
    h,
    entry: "fork",
    draw(g, x, y) {
      const cx = x + w / 2;
      let left = x;
      items.forEach((item, i) => {
        const lcx = left + widths[i] / 2;
        const laneKind = item.kind || kind;
        const { block } = item;
        const arrow = block.entry === "node";
        if (labelled) {
          edge(g, builder, cx, y, lcx, y + FORK_H, { arrow: false, kind: laneKind, turn: y + FORK_H / 2 });
        } else {
          edge(g, builder, cx, y, lcx, y + top, { arrow: arrow && !block.empty, kind: laneKind, turn: y + 9 });
        }
        if (block.empty) {
          edge(g, builder, lcx, y + FORK_H, lcx, y + top + tallest, { arrow: false, kind: laneKind });
        } else {
          if (labelled) edge(g, builder, lcx, y + FORK_H, lcx, y + top, { arrow, kind: laneKind });
          block.draw(g, lcx - block.w / 2, y + top);
          if (block.h < tallest) edge(g, builder, lcx, y + top + block.h, lcx, y + top + tallest, { arrow: false, kind: laneKind });
        }
        edge(g, builder, lcx, y + top + tallest, cx, y + h, { arrow: false, kind: laneKind, turn: y + top + tallest + JOIN_H / 2 });
        if (item.label) pill(g, lcx, y + FORK_H + LABEL_H / 2 + 2, item.label, laneKind);
        left += widths[i] + GAP_X;
      });
    },
  };
}

// Tasks in rows, no edges: the lanes of a wide parallel of plain tasks.
function grid(blocks) {
  const columns = Math.ceil(blocks.length / Math.ceil(blocks.length / GRID_AFTER));
  const cell = Math.max(...blocks.map((b) => b.w));
  const rows = [];
  for (let i = 0; i < blocks.length; i += columns) rows.push(blocks.slice(i, i + columns));
  const heights = rows.map((row) => Math.max(...row.map((b) => b.h)));
  const w = columns * cell + (columns - 1) * GRID_GAP;
  const h = heights.reduce((a, b) => a + b, 0) + (rows.length - 1) * GRID_GAP;
  return {
    w,
    h,
    entry: "none",
    draw(g, x, y) {
      let top = y;
      rows.forEach((row, r) => {
        row.forEach((block, c) => block.draw(g, x + c * (cell + GRID_GAP) + (cell - block.w) / 2, top));
        top += heights[r] + GRID_GAP;
      });
    },
  };
}

// A dag in layers: a task sits one layer below the deepest task it depends on.
function dagLayers(builder, entries) {
  const byId = new Map(entries.map((entry) => [entry.id, entry]));
  const depth = new Map();
  const level = (entry, seen = new Set()) => {
    if (depth.has(entry.id)) return depth.get(entry.id);
    if (seen.has(entry.id)) return 0; // a cycle: the server refuses those; draw anyway
    seen.add(entry.id);
    const parents = entry.deps.map((id) => byId.get(id)).filter(Boolean);
    const value = parents.length ? 1 + Math.max(...parents.map((p) => level(p, seen))) : 0;
    depth.set(entry.id, value);
    return value;
  };
  const rows = [];
  for (const entry of entries) (rows[level(entry)] ??= []).push(entry);
  const filled = rows.filter(Boolean);
  const w = Math.max(...filled.map((row) => row.reduce((sum, e) => sum + e.block.w, 0) + GAP_X * (row.length - 1)));
  // Place the rows; a row is ordered by where its parents are, to cross fewer edges.
  const at = new Map();
  let top = FORK_H;
  for (const row of filled) {
    const centre = (entry) => {
      const xs = entry.deps.map((id) => at.get(id)).filter(Boolean).map((p) => p.x + p.entry.block.w / 2);
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
    };
    const order = row.map((entry, i) => [entry, centre(entry) ?? Number.MAX_SAFE_INTEGER / 2 + i]);
    if (order.some(([, c]) => c < Number.MAX_SAFE_INTEGER / 4)) order.sort((a, b) => a[1] - b[1]);
    const rowWidth = row.reduce((sum, e) => sum + e.block.w, 0) + GAP_X * (row.length - 1);
    let left = (w - rowWidth) / 2;
    const rowHeight = Math.max(...row.map((e) => e.block.h));
    for (const [entry] of order) {
      at.set(entry.id, { x: left, y: top, entry });
      left += entry.block.w + GAP_X;
    }
    top += rowHeight + DAG_GAP;
  }
  const bottom = top - DAG_GAP;
  const h = bottom + JOIN_H;
  const hasChild = new Set(entries.flatMap((e) => e.deps));
  return {
    w,
    h,
    entry: "fork",
    draw(g, x, y) {
      const cx = x + w / 2;
      for (const { x: ex, y: ey, entry } of at.values()) {
        const ncx = x + ex + entry.block.w / 2;
        const parents = entry.deps.map((id) => at.get(id)).filter(Boolean);
        if (!parents.length) edge(g, builder, cx, y, ncx, y + ey);
        for (const parent of parents) {
          edge(g, builder, x + parent.x + parent.entry.block.w / 2, y + parent.y + parent.entry.block.h, ncx, y + ey);
        }
        // A last task goes down past the other layers, then joins the dag's exit.
        if (!hasChild.has(entry.id)) {
          const below = y + ey + entry.block.h;
          if (below < y + bottom) edge(g, builder, ncx, below, ncx, y + bottom, { arrow: false });
          edge(g, builder, ncx, Math.max(below, y + bottom), cx, y + h, { arrow: false });
        }
      }
      for (const { x: ex, y: ey, entry } of at.values()) entry.block.draw(g, x + ex, y + ey);
    },
  };
}

// A labelled dashed frame around a list that is no task: `finally`, `afterExecution`…
function section(title, note, body, kind) {
  const heading = (note ? `${title} · ${note}` : title).toUpperCase();
  const headW = textWidth(heading, FONT_LABEL) + heading.length * 0.5 + 2 * PAD; // + letter-spacing
  const w = Math.max(headW, body.w + 2 * PAD);
  const headH = 26;
  const h = headH + body.h + PAD;
  return {
    w,
    h,
    entry: "node",
    draw(g, x, y) {
      const group = svg("g", { class: `topo-section ${kind}`, role: "group", "aria-label": `${title} tasks` });
      group.append(
        svg("rect", { class: "topo-section-box", x, y, width: w, height: h, rx: 8 }),
        text(x + 10, y + 17, heading, "topo-section-title", { "aria-hidden": "true" }),
      );
      body.draw(group, x + (w - body.w) / 2, y + headH);
      g.append(group);
    },
  };
}

function terminal(label) {
  const w = textWidth(label, FONT_LABEL) + 26;
  return {
    w,
    h: 24,
    entry: "node",
    draw(g, x, y) {
      g.append(
        svg(
          "g",
          { class: "topo-terminal", "aria-hidden": "true" },
          svg("rect", { x, y, width: w, height: 24, rx: 12 }),
          text(x + w / 2, y + 16, label, "topo-terminal-text", { "text-anchor": "middle" }),
        ),
      );
    },
  };
}

// ---- the builder: tasks to blocks -----------------------------------------------------

class Builder {
  constructor(options) {
    this.options = options;
    this.arrowId = `topo-${++instances}-arrow`;
    this.nodes = new Map(); // task id -> [{element, title, task}]
  }

  list(tasks) {
    const blocks = (Array.isArray(tasks) ? tasks : []).filter((t) => t && typeof t === "object").map((t) => this.task(t));
    return blocks.length ? sequence(this, blocks) : null;
  }

  task(task) {
    const type = canonicalType(task.type);
    const items = (list) => (Array.isArray(list) ? list.filter((t) => t && typeof t === "object") : []);
    const limit = (n, none = "all at once") => (n === undefined || n === null ? "" : n === 0 ? none : `${n} at a time`);
    switch (type) {
      case "flow.sequential":
        return this.container(task, type, "sequence", "", this.list(task.tasks));
      case "flow.allowfailure":
        return this.container(task, type, "sequence", "a failure ends it WARNING", this.list(task.tasks));
      case "flow.workingdirectory":
        return this.container(task, type, "sequence", "one directory per task", this.list(task.tasks));
      case "flow.parallel": {
        const n = items(task.tasks).length;
        const most = limit(task.concurrency ?? task.concurrent, "");
        const detail = `${n} branch${n === 1 ? "" : "es"}${most ? `, ${most}` : " at once"}`;
        return this.container(task, type, "parallel", detail, this.parallel(items(task.tasks)));
      }
      case "flow.dag":
        return this.container(task, type, "dag", limit(task.concurrency ?? task.concurrent, ""), this.dag(items(task.tasks)));
      case "flow.if": {
        const branches = [{ label: "then", block: this.list(task.then) ?? passthrough() }];
        branches.push({ label: "else", block: this.list(task.else) ?? passthrough() });
        return this.container(task, type, "branch", `if ${short(task.condition)}`, lanes(this, branches), { mono: true });
      }
      case "flow.switch": {
        const cases = Object.entries(task.cases && typeof task.cases === "object" ? task.cases : {});
        const branches = cases.map(([value, list]) => ({ label: `= ${value}`, block: this.list(list) ?? passthrough() }));
        if (items(task.defaults).length || !branches.length) branches.push({ label: "default", block: this.list(task.defaults) ?? passthrough() });
        return this.container(task, type, "branch", `switch on ${short(task.value)}`, lanes(this, branches), { mono: true });
      }
      case "flow.foreach":
        return this.loop(task, type, task.values, limit(task.concurrencyLimit ?? 1, "all at once").replace(/^1 at a time$/, "one at a time"));
      case "flow.eachsequential":
        return this.loop(task, type, task.value, "one at a time");
      case "flow.eachparallel":
        return this.loop(task, type, task.value, limit(task.concurrent ?? 0));
      case "flow.pause":
        if (items(task.tasks).length) return this.container(task, type, "sequence", pauseText(task), this.list(task.tasks));
        return this.leaf(task, type, pauseText(task));
      case "flow.subflow":
        return this.leaf(task, type, null, { subflow: { namespace: task.namespace, flowId: task.flowId } });
      case "flow.fail":
        return this.leaf(task, type, task.condition ? `fails when ${short(task.condition)}` : `fails: ${task.message ?? task.errorMessage ?? "on purpose"}`);
      case "flow.exit":
        return this.leaf(task, type, `ends the execution ${task.state ?? "SUCCESS"}`);
      default:
        return this.leaf(task, type, null);
    }
  }

  parallel(tasks) {
    if (!tasks.length) return null;
    const blocks = tasks.map((t) => this.task(t));
    // Many plain tasks side by side would need a tiny zoom: wrap them in rows instead.
    if (blocks.length > GRID_AFTER && blocks.every((b) => b.leaf)) return grid(blocks);
    return lanes(this, blocks.map((block) => ({ block })));
  }

  dag(entries) {
    const nodes = entries
      .filter((entry) => entry.task && typeof entry.task === "object")
      .map((entry) => ({ id: entry.task.id, deps: Array.isArray(entry.dependsOn) ? entry.dependsOn : [], block: this.task(entry.task) }));
    return nodes.length ? dagLayers(this, nodes) : null;
  }

  loop(task, type, values, how) {
    const detail = [`for each of ${short(values)}`, how].filter(Boolean).join(" · ");
    return this.container(task, type, "loop", detail, this.list(task.tasks), { mono: true, stacked: true });
  }

  // A task's own `errors` / `finally` (containers have them, as the flow does).
  handlers(body, errors, finallyTasks, afterTasks = null) {
    const parts = [body];
    const errorsBlock = this.list(errors);
    if (errorsBlock) {
      parts.push(
        lanes(this, [
          { label: "on failure", kind: "failure", block: section("errors", "", errorsBlock, "errors") },
          { label: "on success", block: passthrough() },
        ]),
      );
    }
    const finallyBlock = this.list(finallyTasks);
    if (finallyBlock) parts.push(section("finally", "always runs", finallyBlock, "finally"));
    const afterBlock = this.list(afterTasks);
    if (afterBlock) parts.push(section("afterExecution", "once the end state is known", afterBlock, "after"));
    return sequence(this, parts.filter(Boolean));
  }

  flow(flow) {
    const parts = [];
    const triggers = (Array.isArray(flow.triggers) ? flow.triggers : []).filter((t) => t && typeof t === "object");
    if (triggers.length) parts.push(this.triggerRow(triggers));
    parts.push(terminal("start"));
    const tasks = this.list(flow.tasks);
    if (tasks) parts.push(this.handlers(tasks, flow.errors, flow.finally, flow.afterExecution));
    parts.push(terminal("end"));
    return sequence(this, parts);
  }

  // Triggers side by side, joined into the start.
  triggerRow(triggers) {
    const blocks = triggers.map((t) => this.trigger(t));
    const w = blocks.reduce((sum, b) => sum + b.w, 0) + GAP_X * (blocks.length - 1);
    const tallest = Math.max(...blocks.map((b) => b.h));
    const h = tallest + JOIN_H;
    return {
      w,
      h,
      entry: "node",
      draw: (g, x, y) => {
        let left = x;
        for (const block of blocks) {
          block.draw(g, left, y);
          edge(g, this, left + block.w / 2, y + block.h, x + w / 2, y + h, { arrow: false, kind: "trigger", turn: y + tallest + JOIN_H / 2 });
          left += block.w + GAP_X;
        }
      },
    };
  }

  trigger(trigger) {
    const type = triggerType(trigger.type);
    const detail = triggerDetail(type, trigger);
    const line2 = [type, detail, trigger.disabled ? "off" : ""].filter(Boolean).join(" · ");
    const w = clampWidth(Math.max(textWidth(trigger.id, FONT_ID), textWidth(line2, FONT_SMALL)) + 30);
    const label = `trigger ${trigger.id} (${trigger.type})`;
    return {
      w,
      h: 44,
      entry: "node",
      draw: (g, x, y) => {
        const node = svg(
          "g",
          { class: `topo-trigger${trigger.disabled ? " disabled" : ""}`, tabindex: "0", role: "img", "aria-label": label, "data-trigger-id": trigger.id },
          svg("title", {}, [trigger.description, `${type}${detail ? `: ${detail}` : ""}`, trigger.disabled ? "disabled" : null].filter(Boolean).join("\n")),
          svg("rect", { class: "box", x, y, width: w, height: 44, rx: 22 }),
          text(x + 15, y + 19, fit(trigger.id, w - 30, FONT_ID), "topo-id"),
          text(x + 15, y + 35, fit(line2, w - 30, FONT_SMALL), "topo-type"),
        );
        g.append(node);
      },
    };
  }

  // A frame around a container's children, its header the task itself.
  container(task, type, kind, detail, content, { mono = false, stacked = false } = {}) {
    const hasHandlers = (Array.isArray(task.errors) && task.errors.length) || (Array.isArray(task.finally) && task.finally.length);
    const body = content && hasHandlers ? this.handlers(content, task.errors, task.finally) : content;
    const flags = taskFlags(task);
    const line2 = [shortType(task.type), ...flags].join(" · ");
    const headW = Math.max(textWidth(task.id, FONT_ID), textWidth(line2, FONT_SMALL), detail ? Math.min(textWidth(detail, FONT_SMALL, mono), 420) : 0) + 2 * PAD + 6;
    const headH = detail ? 64 : 46;
    const inner = body ? body.w + 2 * PAD : 0;
    const offset = stacked ? 6 : 0;
    const w = Math.max(MIN_W, headW, inner) + offset;
    const h = headH + (body ? PAD + body.h + PAD : 0) + offset;
    return {
      w,
      h,
      entry: "node",
      draw: (g, x, y) => {
        const fw = w - offset;
        const fh = h - offset;
        const node = this.node(task, type, `topo-frame kind-${kind}${task.disabled ? " disabled" : ""}`, "group");
        if (stacked) {
          node.append(
            svg("rect", { class: "topo-stack", x: x + 6, y: y + 6, width: fw, height: fh, rx: 8, "aria-hidden": "true" }),
            svg("rect", { class: "topo-stack", x: x + 3, y: y + 3, width: fw, height: fh, rx: 8, "aria-hidden": "true" }),
          );
        }
        node.append(
          svg("rect", { class: "box", x, y, width: fw, height: fh, rx: 8 }),
          svg("rect", { class: "topo-stripe", x, y, width: fw, height: 4, rx: 2, "aria-hidden": "true" }),
          text(x + PAD, y + 22, fit(task.id, fw - 2 * PAD, FONT_ID), "topo-id", { "aria-hidden": "true" }),
          text(x + PAD, y + 38, fit(line2, fw - 2 * PAD, FONT_SMALL), "topo-type", { "aria-hidden": "true" }),
        );
        if (detail) node.append(text(x + PAD, y + 55, fit(detail, fw - 2 * PAD, FONT_SMALL, mono), `topo-detail${mono ? " mono" : ""}`, { "aria-hidden": "true" }));
        if (body) {
          const cx = x + fw / 2;
          const top = y + headH + PAD;
          const joined = body.entry !== "none";
          if (joined) edge(node, this, cx, y + headH, cx, top, { arrow: body.entry === "node" });
          body.draw(node, cx - body.w / 2, top);
          if (joined) edge(node, this, cx, top + body.h, cx, y + fh, { arrow: false });
        }
        g.append(node);
      },
    };
  }

  leaf(task, type, extra, { subflow = null } = {}) {
    const flags = taskFlags(task);
    const line2 = [shortType(task.type), ...flags].join(" · ");
    const target = subflow && subflow.namespace && subflow.flowId ? `${subflow.namespace}/${subflow.flowId}` : null;
    const line3 = target ? `→ ${target}` : extra;
    const w = clampWidth(Math.max(textWidth(task.id, FONT_ID), textWidth(line2, FONT_SMALL), line3 ? textWidth(line3, FONT_SMALL) : 0) + 30);
    const height = line3 ? NODE_H_EXTRA : NODE_H;
    return {
      w,
      h: height,
      entry: "node",
      leaf: true,
      draw: (g, x, y) => {
        const node = this.node(task, type, `topo-leaf${task.disabled ? " disabled" : ""} ${category(type)}`, target ? "group" : "img");
        node.append(
          svg("rect", { class: "box", x, y, width: w, height, rx: 6 }),
          svg("rect", { class: "topo-stripe", x, y, width: 4, height, rx: 2, "aria-hidden": "true" }),
          text(x + 14, y + 20, fit(task.id, w - 26, FONT_ID), "topo-id", { "aria-hidden": "true" }),
          text(x + 14, y + 37, fit(line2, w - 26, FONT_SMALL), "topo-type", { "aria-hidden": "true" }),
        );
        if (target) node.append(this.subflowLink(x + 14, y + 54, target, w - 26));
        else if (line3) node.append(text(x + 14, y + 54, fit(line3, w - 26, FONT_SMALL), "topo-detail", { "aria-hidden": "true" }));
        g.append(node);
      },
    };
  }

  // SVG links are not followed by the app's router (their href is no string): navigate here.
  subflowLink(x, y, target, width) {
    const href = `/ui/flows/${target.split("/").map(encodeURIComponent).join("/")}`;
    const anchor = svg("a", { href, class: "topo-link", "aria-label": `open flow ${target}` }, text(x, y, fit(`→ ${target}`, width, FONT_SMALL), ""));
    anchor.addEventListener("click", (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      event.stopPropagation();
      if (this.options.navigate) this.options.navigate(href);
      else {
        history.pushState(null, "", href);
        window.dispatchEvent(new PopStateEvent("popstate"));
      }
    });
    anchor.addEventListener("keydown", (event) => event.stopPropagation());
    return anchor;
  }

  // The focusable group of a task, registered for state colouring.
  node(task, type, className, role) {
    const element = svg("g", {
      class: `topo-node ${className}`,
      tabindex: "0",
      role,
      "aria-label": `task ${task.id} (${task.type})`,
      "data-task-id": task.id,
      "data-type": type,
    });
    const title = svg("title", {}, task.description || `${task.id} (${task.type})`);
    element.append(title);
    const select = (event) => {
      event.stopPropagation();
      this.options.onSelect?.(task.id, task);
    };
    element.addEventListener("click", select);
    element.addEventListener("keydown", (event) => {
      if (event.target === element && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        select(event);
      }
    });
    const list = this.nodes.get(task.id) ?? [];
    list.push({ element, title, task });
    this.nodes.set(task.id, list);
    return element;
  }
}

function clampWidth(width) {
  return Math.ceil(Math.min(MAX_W, Math.max(MIN_W, width)));
}

function category(type) {
  if (type.startsWith("flow.")) return "cat-flow";
  if (/^(shell|python|node|script|docker)/.test(type) || /scripts\./.test(type)) return "cat-script";
  return "cat-connector";
}

function taskFlags(task) {
  const flags = [];
  if (task.disabled) flags.push("disabled");
  if (task.allowFailure) flags.push("may fail");
  if (task.runIf !== undefined && task.runIf !== null) flags.push("runIf");
  const attempts = task.retry?.maxAttempts ?? task.retry?.maxAttempt;
  if (task.retry) flags.push(attempts ? `retry ×${attempts}` : "retry");
  return flags;
}

function pauseText(task) {
  const duration = task.pauseDuration ?? task.delay;
  const inputs = Array.isArray(task.onResume) && task.onResume.length ? ` · ${task.onResume.length} input${task.onResume.length > 1 ? "s" : ""}` : "";
  return `${duration ? `resumes after ${duration}` : "waits for a resume"}${inputs}`;
}

function triggerDetail(type, trigger) {
  switch (type) {
    case "schedule":
      return [trigger.cron, trigger.timezone].filter(Boolean).join(" ");
    case "flow": {
      const flows = trigger.preconditions?.flows;
      if (Array.isArray(flows) && flows.length) return `after ${flows.map((f) => `${f.namespace}/${f.flowId}`).join(", ")}`;
      return "after other flows";
    }
    case "kafka":
      return trigger.topic ?? "";
    default:
      return "";
  }
}

// ---- the component --------------------------------------------------------------------

export function renderTopology(container, flow, options = {}) {
  const builder = new Builder(options);
  const root = builder.flow(flow || {});
  const width = Math.ceil(root.w + 2 * MARGIN);
  const height = Math.ceil(root.h + 2 * MARGIN);
  const graph = svg("svg", {
    class: "topo-svg",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "group",
    "aria-label": `Topology of ${flow?.namespace ?? ""}${flow?.namespace ? "." : ""}${flow?.id ?? "the flow"}`,
    "data-selectable": options.onSelect ? "" : null,
  });
  graph.append(
    svg(
      "defs",
      {},
      svg(
        "marker",
        { id: builder.arrowId, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "topo-arrow" }),
      ),
    ),
  );
  const layer = svg("g", {});
  root.draw(layer, MARGIN, MARGIN);
  graph.append(layer);

  const viewport = h("div", { class: "topo-viewport" }, graph);
  const percent = h("span", { class: "topo-zoom-value", "aria-live": "polite" }, "100%");
  let zoom = 1;
  let fitting = true;
  const apply = (value) => {
    zoom = value;
    graph.setAttribute("width", Math.round(width * zoom));
    graph.setAttribute("height", Math.round(height * zoom));
    percent.textContent = `${Math.round(zoom * 100)}%`;
  };
  const fitWidth = () => {
    const style = getComputedStyle(viewport);
    const available = viewport.clientWidth - Number.parseFloat(style.paddingLeft) - Number.parseFloat(style.paddingRight) - 1;
    if (available <= 0) return;
    apply(Math.max(FIT_MIN, Math.min(1, available / width)));
  };
  const step = (direction) => {
    fitting = false;
    const next = direction > 0 ? ZOOMS.find((z) => z > zoom + 0.001) : [...ZOOMS].reverse().find((z) => z < zoom - 0.001);
    if (next) apply(next);
  };
  const toolbar = h(
    "div",
    { class: "topo-toolbar", role: "group", "aria-label": "Topology zoom" },
    options.legend === false ? null : renderTopologyLegend({ states: Boolean(options.states) }),
    h("span", { class: "topo-spacer" }),
    h("button", { type: "button", class: "topo-zoom", "aria-label": "Zoom out", title: "Zoom out", onclick: () => step(-1) }, "−"),
    percent,
    h("button", { type: "button", class: "topo-zoom", "aria-label": "Zoom in", title: "Zoom in", onclick: () => step(1) }, "+"),
    h("button", { type: "button", "aria-label": "Fit to width", title: "Fit to width", onclick: () => { fitting = true; fitWidth(); } }, "Fit"),
  );
  const wrapper = h("div", { class: "topo" }, toolbar, viewport);
  container.replaceChildren(wrapper);
  fitWidth();
  // Refit as the page resizes (or a hidden tab shows) until the user picks a zoom.
  const observer = new ResizeObserver(() => {
    if (!wrapper.isConnected) observer.disconnect();
    else if (fitting) fitWidth();
  });
  observer.observe(viewport);

  let selected = null;
  const api = {
    element: wrapper,
    fit: () => { fitting = true; fitWidth(); },
    setStates(states) {
      graph.classList.toggle("has-states", Boolean(states));
      for (const [id, list] of builder.nodes) {
        const state = states?.[id];
        for (const { element, title, task } of list) {
          for (const name of [...element.classList]) if (name.startsWith("st-")) element.classList.remove(name);
          if (state) {
            element.classList.add(`st-${String(state).toLowerCase()}`);
            element.setAttribute("data-state", state);
          } else element.removeAttribute("data-state");
          title.textContent = [task.description || `${task.id} (${task.type})`, states ? `State: ${state ?? "not run"}` : null].filter(Boolean).join("\n");
        }
      }
    },
    select(taskId) {
      selected = taskId;
      for (const [id, list] of builder.nodes) for (const { element } of list) element.classList.toggle("selected", id === selected);
    },
  };
  if (options.states) api.setStates(options.states);
  return api;
}

// What the colours and frames mean, as a small inline list.
export function renderTopologyLegend({ states = false } = {}) {
  const swatch = (kind, label) => h("li", {}, h("span", { class: `topo-swatch ${kind}`, "aria-hidden": "true" }), label);
  const items = states
    ? [swatch("st-success", "success"), swatch("st-running", "running"), swatch("st-failed", "failed"), swatch("st-warning", "warning"), swatch("st-paused", "paused"), swatch("st-none", "not run")]
    : [swatch("kind-parallel", "parallel"), swatch("kind-branch", "if / switch"), swatch("kind-loop", "for each"), swatch("kind-dag", "dag"), swatch("kind-errors", "on failure")];
  return h("ul", { class: "topo-legend", "aria-label": "Legend" }, items);
}
