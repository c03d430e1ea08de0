// An execution's log lines, live: `GET /api/v1/logs/{id}/follow` (SSE) filtered by level on
// the server (`minLevel`), then by task run and search text here, over the lines loaded.
// The view keeps at most a window of lines in the DOM (the newest ones; "Show earlier
// lines" widens it), appends new lines once per frame, and follows the end of the log
// unless the user scrolled up. Download saves every line as text (with the auth header).
//
// const logs = createLogs(executionId, {signal, onClearTaskRun}); parent.append(logs.element);
// logs.setTaskRun(run | null); logs.follow() again after the execution restarted.

import { api, follow } from "../api.js";
import { clear, h, saveBlob, toast } from "../dom.js";

const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
const DEFAULT_LEVEL = "INFO";
const WINDOW = 2000; // lines in the DOM at first, and how many more "Show earlier" adds
const SEARCH_DEBOUNCE_MS = 200;
const BOTTOM_SLACK_PX = 24;

let logsCount = 0;

export function createLogs(executionId, { signal, onClearTaskRun = () => {}, level: initialLevel } = {}) {
  const uid = `logs-${++logsCount}`;
  const levelSelect = h(
    "select",
    { id: `${uid}-level` },
    h("option", { value: "ALL" }, "ALL"),
    LEVELS.map((level) => h("option", { value: level }, level)),
  );
  levelSelect.value = initialLevel && (initialLevel === "ALL" || LEVELS.includes(initialLevel)) ? initialLevel : DEFAULT_LEVEL;
  const search = h("input", { id: `${uid}-search`, type: "search", placeholder: "Text in the lines", spellcheck: "false", autocomplete: "off" });
  const taskChip = h("span", { class: "task-chip", hidden: true });
  const count = h("span", { class: "logs-count", "aria-live": "polite" });
  const download = h("button", { type: "button", title: "Every line of this execution, as text" }, "Download logs");
  const box = h("div", { class: "logs-box", role: "log", "aria-live": "off", "aria-label": "Log lines", tabindex: "0" });
  const followButton = h("button", { type: "button", class: "primary logs-follow", hidden: true }, "Follow new lines ↓");
  const element = h(
    "div",
    { class: "logs" },
    h(
      "div",
      { class: "logs-tools" },
      h("div", { class: "field" }, h("label", { for: levelSelect.id }, "Level"), levelSelect),
      h("div", { class: "field grow" }, h("label", { for: search.id }, "Search logs"), search),
      taskChip,
      count,
      download,
    ),
    h("div", { class: "logs-view" }, box, followButton),
  );

  let lines = []; // every line received at the current level, oldest first
  const ids = new Set();
  let pending = [];
  let frame = 0;
  let taskRun = null;
  let needle = "";
  let windowSize = WINDOW;
  let matching = 0; // lines matching the task and search filters
  let rendered = 0; // of which in the DOM
  let stick = true; // follow the end of the log
  let unseen = 0;
  let ended = false;
  let streaming = null; // the AbortController of the stream

  const matches = (line) => (!taskRun || line.taskRunId === taskRun.id) && (!needle || (line.message || "").toLowerCase().includes(needle) || (line.taskId || "").toLowerCase().includes(needle));

  const lineElement = (line) =>
    h(
      "div",
      { class: "log-line", dataset: { level: line.level } },
      h("span", { class: "t", title: line.timestamp }, clock(line.timestamp)),
      h("span", { class: "lvl" }, line.level),
      h("span", { class: "task", title: line.taskId ? `${line.taskId}, attempt ${line.attempt ?? "-"}` : "" }, line.taskId ? `${line.taskId}${line.attempt > 1 ? ` #${line.attempt}` : ""}` : "—"),
      h("span", { class: "msg" }, highlight(line.message, needle)),
    );

  const note = () => {
    const hidden = matching - rendered;
    const head = box.querySelector(".logs-note.head");
    if (hidden > 0) {
      const more = h("button", { type: "button" }, `Show ${Math.min(hidden, WINDOW).toLocaleString()} earlier`);
      more.addEventListener("click", showEarlier);
      const text = h("div", { class: "logs-note head" }, `${hidden.toLocaleString()} earlier ${hidden === 1 ? "line" : "lines"} not shown.`, more);
      if (head) head.replaceWith(text);
      else box.prepend(text);
    } else head?.remove();
    let tail = box.querySelector(".logs-note.tail");
    const message = matching === 0 ? emptyText() : ended ? "End of the log." : null;
    if (!message) tail?.remove();
    else {
      if (!tail) tail = h("div", { class: "logs-note tail" });
      tail.textContent = message;
      box.append(tail);
    }
    const total = lines.length;
    count.textContent = taskRun || needle ? `${matching.toLocaleString()} of ${total.toLocaleString()} lines` : `${total.toLocaleString()} ${total === 1 ? "line" : "lines"}`;
  };

  const emptyText = () => {
    if (lines.length && (taskRun || needle)) return "No line matches these filters.";
    if (!ended) return "Waiting for log lines…";
    return levelSelect.value === "ALL" || levelSelect.value === "TRACE" ? "This execution wrote no log line." : `No line at ${levelSelect.value} or above.`;
  };

  // Everything again (filters changed): the newest `windowSize` matching lines.
  const renderAll = () => {
    const filtered = lines.filter(matches);
    matching = filtered.length;
    const shown = filtered.slice(Math.max(0, filtered.length - windowSize));
    rendered = shown.length;
    const fragment = document.createDocumentFragment();
    for (const line of shown) fragment.append(lineElement(line));
    clear(box, fragment);
    note();
    if (stick) toBottom();
  };

  const showEarlier = () => {
    const before = box.scrollHeight - box.scrollTop;
    windowSize += WINDOW;
    stick = false;
    renderAll();
    box.scrollTop = box.scrollHeight - before; // keep the lines in view where they were
  };

  const flush = () => {
    frame = 0;
    const batch = pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    let added = 0;
    for (const line of batch) {
      lines.push(line);
      if (!matches(line)) continue;
      matching += 1;
      fragment.append(lineElement(line));
      added += 1;
    }
    if (added) {
      const tail = box.querySelector(".logs-note.tail");
      box.insertBefore(fragment, tail);
      rendered += added;
      if (stick) trim();
      else {
        unseen += added;
        followButton.textContent = `${unseen.toLocaleString()} new ${unseen === 1 ? "line" : "lines"} ↓`;
        followButton.hidden = false;
      }
    }
    note();
    if (stick) toBottom();
  };

  // While following the end, older lines leave the DOM beyond the window.
  const trim = () => {
    let extra = rendered - windowSize;
    if (extra < WINDOW / 4) return;
    while (extra > 0) {
      const first = box.querySelector(".log-line");
      if (!first) break;
      first.remove();
      rendered -= 1;
      extra -= 1;
    }
  };

  const receive = (line) => {
    if (!line || ids.has(line.id)) return; // a re-follow after a restart sends them again
    ids.add(line.id);
    pending.push(line);
    if (!frame) frame = requestAnimationFrame(flush);
  };

  const toBottom = () => {
    box.scrollTop = box.scrollHeight;
    unseen = 0;
    followButton.hidden = true;
  };

  box.addEventListener("scroll", () => {
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < BOTTOM_SLACK_PX;
    if (atBottom && !stick) {
      stick = true;
      unseen = 0;
      followButton.hidden = true;
    } else if (!atBottom && stick) stick = false;
  });
  followButton.addEventListener("click", () => {
    stick = true;
    if (windowSize > WINDOW) {
      windowSize = WINDOW;
      renderAll();
    }
    toBottom();
    box.focus();
  });

  const start = async () => {
    streaming?.abort();
    const controller = new AbortController();
    streaming = controller;
    const both = AbortSignal.any([signal, controller.signal]);
    ended = false;
    note();
    const level = levelSelect.value;
    try {
      await follow(`logs/${encodeURIComponent(executionId)}/follow`, {
        query: { minLevel: level === "ALL" ? undefined : level },
        signal: both,
        onEvent: (name, data) => {
          if (name === "log") receive(data);
        },
      });
      if (both.aborted) return;
      ended = true;
      if (frame) {
        cancelAnimationFrame(frame);
        flush();
      } else note();
    } catch (error) {
      if (!both.aborted) {
        ended = true;
        note();
        toast(`Logs: ${error.message}`, "error");
      }
    }
  };

  levelSelect.addEventListener("change", () => {
    lines = [];
    ids.clear();
    pending = [];
    windowSize = WINDOW;
    stick = true;
    renderAll();
    start();
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      needle = search.value.trim().toLowerCase();
      windowSize = WINDOW;
      renderAll();
    }, SEARCH_DEBOUNCE_MS);
  });
  download.addEventListener("click", async () => {
    download.disabled = true;
    try {
      const text = await api(`logs/${encodeURIComponent(executionId)}/download`, { signal });
      saveBlob(new Blob([text], { type: "text/plain;charset=utf-8" }), `${executionId}.log`);
    } catch (error) {
      if (!signal?.aborted) toast(`Download failed: ${error.message}`, "error");
    } finally {
      download.disabled = false;
    }
  });
  signal?.addEventListener("abort", () => {
    cancelAnimationFrame(frame);
    clearTimeout(searchTimer);
  });

  renderAll();
  start();

  return {
    element,
    // Only the lines of `run` (a task run of the execution), or every line with null.
    setTaskRun(run) {
      taskRun = run;
      if (run) {
        const value = run.value === null || run.value === undefined ? "" : ` (${typeof run.value === "string" ? run.value : JSON.stringify(run.value)})`;
        const close = h("button", { type: "button", class: "link", "aria-label": "Show the lines of every task" }, "×");
        close.addEventListener("click", () => onClearTaskRun());
        clear(taskChip, h("span", {}, "Task run: ", h("strong", { class: "mono" }, `${run.taskId}${value}`)), close);
      }
      taskChip.hidden = !run;
      windowSize = WINDOW;
      stick = true;
      renderAll();
    },
    // Follow again (the execution restarted or resumed after its log stream ended).
    follow() {
      if (ended) start();
    },
  };
}

function clock(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const hours = date.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return `${hours}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

// The text with each occurrence of `needle` (lower case) in a <mark>.
function highlight(text, needle) {
  const message = String(text ?? "");
  if (!needle) return message;
  const lower = message.toLowerCase();
  const parts = [];
  let at = 0;
  for (let found = lower.indexOf(needle); found >= 0; found = lower.indexOf(needle, at)) {
    parts.push(message.slice(at, found), h("mark", {}, message.slice(found, found + needle.length)));
    at = found + needle.length;
  }
  parts.push(message.slice(at));
  return parts;
}

