// The REST API as the pages call it: credentials, JSON requests, errors, live streams.
//
// Credentials stay in this tab's sessionStorage as an `Authorization` value ("Bearer …" or
// "Basic …"); they are sent as a header, never as a cookie, so no other site can make the
// browser use them. A 401 sends the user to the sign-in form.

import { sleep } from "./dom.js";

const STORAGE_KEY = "headrace.authorization";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function authorization() {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function signIn(value) {
  sessionStorage.setItem(STORAGE_KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
}

// Called on a 401: the app shows the sign-in form (set by app.js).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function url(path, query) {
  const target = new URL(path.startsWith("/") ? path : `${API}/${path}`, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) target.searchParams.append(key, item);
  }
  return target;
}

function headers(extra) {
  const result = { ...extra };
  const auth = authorization();
  if (auth) result.Authorization = auth;
  return result;
}

async function failure(response) {
  let body = null;
  let message = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    if (body && body.message) message = body.message;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) onUnauthorized(message);
  return new ApiError(response.status, message, body);
}

// `api("flows", {query: {namespace: "x"}})`; `body` is sent as JSON, or as YAML text when
// `yaml` is given. Resolves to the parsed JSON answer (or text for non-JSON answers).
export async function api(path, { method = "GET", query, body, yaml, signal } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (yaml !== undefined) {
    init.headers["Content-Type"] = "application/x-yaml";
    init.body = yaml;
  } else if (body instanceof Blob) {
    init.headers["Content-Type"] = "application/octet-stream";
    init.body = body;
  } else if (body !== undefined || method === "POST") {
    // A POST always carries JSON (`{}` when there is nothing to say): a body-less or form
    // POST is what any page can make a browser send, and the gateway refuses it to
    // basic-auth callers (services/gateway/browser.py).
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body ?? {});
  }
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204) return null;
  return type.includes("json") ? response.json() : response.text();
}

// Server-Sent Events over fetch (EventSource cannot send an Authorization header).
// Calls `onEvent(name, data)` per event, `data` parsed as JSON when it is; resumes after
// the last id on a dropped connection until `signal` aborts or an `end` event arrives.
export async function follow(path, { query, onEvent, signal }) {
  let lastId = null;
  let delay = 500;
  while (!signal?.aborted) {
    try {
      const response = await fetch(url(path, { ...query, lastEventId: lastId ?? undefined }), {
        headers: headers({ Accept: "text/event-stream" }),
        signal,
      });
      if (!response.ok) throw await failure(response);
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          const event = parseEvent(block);
          if (event.id !== null) lastId = event.id;
          if (event.data === null && event.name === "message") continue;
          onEvent(event.name, event.data);
          if (event.name === "end") {
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      // A dropped connection is retried; a bug in onEvent is not hidden by a retry.
      if (!(error instanceof ApiError) && error?.name !== "TypeError" && error?.name !== "AbortError") throw error;
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10_000);
  }
}

function parseEvent(block) {
  let name = "message";
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  let parsed = data.length ? data.join("\n") : null;
  if (parsed !== null) {
    try {
      parsed = JSON.parse(parsed);
    } catch {
      // plain text data
    }
  }
  return { name, id, data: parsed };
}

// Who these credentials are (`GET /api/v1/me`: name, role, scheme), asked once per set of
// credentials; null when the gateway has no such route. Pages disable what a reader may
// not do, with READ_ONLY as the reason, instead of letting the API answer 403.
export const READ_ONLY = "read-only token";
const whoAnswers = new Map();
export function whoAmI() {
  const key = authorization() || "";
  if (!whoAnswers.has(key)) whoAnswers.set(key, api("me").catch(() => null));
  return whoAnswers.get(key);
}
