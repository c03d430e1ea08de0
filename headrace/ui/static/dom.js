// Small helpers the pages share: building elements, formatting, state badges, messages.

// h("button", {class: "primary", onclick: fn}, "Save") — attributes starting with "on"
// become listeners; `null`/`false` children and attributes are skipped. Text is always
// set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(key, "");
    } else {
      element.setAttribute(key, value);
    }
  }
  append(element, children);
  return element;
}

export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

// A link the router follows without reloading the page.
export function link(href, ...children) {
  return h("a", { href }, ...children);
}

export const TERMINAL_STATES = new Set(["SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED"]);

export function stateBadge(state) {
  return h("span", { class: `state state-${String(state).toLowerCase()}` }, state);
}

export function formatDate(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  // Round once, then split: rounding the remainder would print "14 min 60 s".
  const seconds = Math.round(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function duration(start, end) {
  if (!start) return null;
  return (end ? new Date(end) : new Date()) - new Date(start);
}

// A short message in the corner; errors stay until dismissed.
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const close = h("button", { class: "link", "aria-label": "Dismiss" }, "×");
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : null }, h("span", {}, message), close);
  close.addEventListener("click", () => item.remove());
  box.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

// The error a failed call gives, as a page shows it in place of its content.
export function errorBox(error) {
  return h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Error: "), error?.message || String(error));
}

// Wait for `ms` unless `signal` aborts first.
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const abort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

// Text written the way docstrings and flow descriptions are (paragraphs split by blank
// lines, `code` in backticks), as elements; never parsed as HTML.
export function prose(text) {
  return String(text || "")
    .split(/\n\s*\n/)
    .filter((para) => para.trim())
    .map((para) => h("p", {}, inlineCode(para.replace(/\s*\n\s*/g, " "))));
}

export function inlineCode(text) {
  return String(text)
    .split(/(`[^`]+`)/)
    .map((part) => (part.length > 2 && part.startsWith("`") && part.endsWith("`") ? h("code", {}, part.slice(1, -1)) : part));
}

// Where the UI shows a flow, and its path in the API (`flows/{namespace}/{id}`).
export function flowPath(namespace, id) {
  return `${encodeURIComponent(namespace)}/${encodeURIComponent(id)}`;
}

export function flowHref(namespace, id) {
  return `/ui/flows/${flowPath(namespace, id)}`;
}

// "3 min ago", "in 2 h", "yesterday"; put the exact time in a title beside it.
export function relativeTime(value) {
  const then = new Date(value);
  if (!value || Number.isNaN(then.getTime())) return "—";
  const seconds = Math.round((then.getTime() - Date.now()) / 1000);
  const future = seconds > 0;
  const abs = Math.abs(seconds);
  const say = (text) => (future ? `in ${text}` : `${text} ago`);
  if (abs < 45) return future ? "in a few seconds" : "just now";
  if (abs < 3600) return say(`${Math.round(abs / 60)} min`);
  if (abs < 86400) return say(`${Math.round(abs / 3600)} h`);
  const days = Math.round(abs / 86400);
  if (days === 1) return future ? "tomorrow" : "yesterday";
  if (days < 7) return say(`${days} days`);
  return then.toLocaleDateString(undefined, { dateStyle: "medium" });
}

// An API error as a form shows it: its message, then each detail the API listed.
export function describeError(error) {
  const details = error?.body?.errors || error?.body?.details;
  if (Array.isArray(details) && details.length) {
    return `${error.message}: ${details.map((d) => d.message || JSON.stringify(d)).join("; ")}`;
  }
  return error?.message || String(error);
}

// Saves `blob` as a download named `name` (files the API serves need the auth header,
// so they are fetched first rather than linked).
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// A time as a `datetime-local` control shows it: the user's wall clock, to the minute.
export function toLocalInput(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}
