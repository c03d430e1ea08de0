// The web UI's entry point: the router (pages have real URLs under /ui/), the sign-in
// form, and the header. Each page module exports `render(main, params, context)`;
// `context.signal` aborts when the user leaves the page (live streams stop with it).

import { authorization, setUnauthorizedHandler, signIn, signOut } from "./api.js";
import { clear, errorBox, h } from "./dom.js";

const ROUTES = [
  [/^\/$/, "home", () => import("./pages/home.js")],
  [/^\/ui\/?$/, "home", () => import("./pages/home.js")],
  [/^\/ui\/flows\/?$/, "flows", () => import("./pages/flows.js")],
  [/^\/ui\/flows\/new$/, "flows", () => import("./pages/flow.js")],
  [/^\/ui\/flows\/(?<namespace>[^/]+)\/(?<id>[^/]+)$/, "flows", () => import("./pages/flow.js")],
  [/^\/ui\/executions\/?$/, "executions", () => import("./pages/executions.js")],
  [/^\/ui\/executions\/(?<id>[^/]+)$/, "executions", () => import("./pages/execution.js")],
  [/^\/ui\/dashboard$/, "dashboard", () => import("./pages/dashboard.js")],
  [/^\/ui\/blueprints$/, "blueprints", () => import("./pages/blueprints.js")],
  [/^\/ui\/namespaces\/?$/, "namespaces", () => import("./pages/namespaces.js")],
  [/^\/ui\/namespaces\/(?<namespace>[^/]+)$/, "namespaces", () => import("./pages/namespace.js")],
  [/^\/ui\/plugins\/?$/, "plugins", () => import("./pages/plugins.js")],
  [/^\/ui\/plugins\/(?<type>[^/]+)$/, "plugins", () => import("./pages/plugins.js")],
];

const main = document.getElementById("main");
let current = null; // the AbortController of the page on screen

export function navigate(href, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  show({ moved: true });
}

function setTitle(title) {
  document.title = title ? `${title} · headrace` : "headrace";
}

// `moved`: a new page was asked for (a link, not Back/Forward): it opens at its top and
// takes the focus, so that a screen reader starts reading there.
async function show({ moved = false } = {}) {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  if (!authorization()) return showSignIn();
  renderWho();
  // Each page renders into its own container: one still loading when the user has moved
  // on writes into a container no longer on screen, never into the next page.
  const container = h("div", { class: "page" });
  try {
    const path = decodeURI(location.pathname);
    const match = ROUTES.map(([pattern, nav, load]) => [pattern.exec(path), nav, load]).find(([m]) => m);
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (match && a.dataset.nav === match[1]) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (!match) {
      setTitle("Not found");
      clear(main, h("h1", {}, "Page not found"), h("p", {}, `Nothing lives at ${path}. `, h("a", { href: "/" }, "Go home")));
      return;
    }
    const [found, , load] = match;
    const params = Object.fromEntries(Object.entries(found.groups || {}).map(([k, v]) => [k, decodeURIComponent(v)]));
    const page = await load();
    if (controller.signal.aborted) return;
    clear(main, container);
    if (moved) {
      window.scrollTo(0, 0);
      main.focus({ preventScroll: true });
    }
    await page.render(container, params, {
      signal: controller.signal,
      query: new URLSearchParams(location.search),
      setTitle,
      navigate,
    });
  } catch (error) {
    if (controller.signal.aborted) return;
    clear(main, errorBox(error));
  }
}

function renderWho() {
  const who = document.getElementById("who");
  clear(who, h("button", { class: "link", onclick: () => { signOut(); show(); } }, "Sign out"));
}

function showSignIn(reason) {
  current?.abort();
  setTitle("Sign in");
  clear(document.getElementById("who"));
  const token = h("input", { id: "signin-token", type: "password", autocomplete: "current-password", spellcheck: "false" });
  const user = h("input", { id: "signin-user", type: "text", autocomplete: "username" });
  const password = h("input", { id: "signin-password", type: "password", autocomplete: "current-password" });
  const message = h("p", { class: "form-error", role: "alert", hidden: !reason }, reason || "");
  const form = h(
    "form",
    { class: "signin card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to headrace"),
    h("p", { class: "muted" }, "Paste the gateway's token (", h("code", {}, "headrace server local"), " prints it and keeps it in ", h("code", {}, "~/.config/headrace/token"), "), or give a user name and password if the gateway has users."),
    h("div", { class: "field" }, h("label", { for: "signin-token" }, "Token"), token),
    h("details", {}, h("summary", {}, "User name and password instead"),
      h("div", { class: "field" }, h("label", { for: "signin-user" }, "User name"), user),
      h("div", { class: "field" }, h("label", { for: "signin-password" }, "Password"), password)),
    message,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = token.value.trim()
      ? `Bearer ${token.value.trim()}`
      : `Basic ${btoa(String.fromCodePoint(...new TextEncoder().encode(`${user.value}:${password.value}`)))}`;
    // Checked with a plain fetch: through api(), a 401 would redraw this form at once.
    let answer = null;
    try {
      answer = await fetch("/api/v1", { headers: { Authorization: value, Accept: "application/json" } });
    } catch (error) {
      message.textContent = `Cannot reach the gateway: ${error.message}`;
      message.hidden = false;
      return;
    }
    if (answer.ok) {
      signIn(value);
      show();
      return;
    }
    const body = await answer.json().catch(() => ({}));
    message.textContent = answer.status === 401 ? "Those credentials were refused." : body.message || `${answer.status} ${answer.statusText}`;
    message.hidden = false;
  });
  clear(main, form);
  token.focus();
}

// A link from `headrace server local` carries the token in the fragment, which browsers
// never send to the server: keep it for this tab and take it out of the address bar.
function takeTokenFromFragment() {
  const match = /^#token=(.+)$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    signIn(`Bearer ${decodeURIComponent(match[1])}`);
  } catch {
    // a malformed link: the sign-in form asks instead
  }
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[href]");
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  // An SVG link's href is an SVGAnimatedString (the topology's subflow links).
  const target = new URL(typeof a.href === "string" ? a.href : a.href.baseVal, location.href);
  if (target.origin !== location.origin || a.target || a.hasAttribute("download")) return;
  if (!(target.pathname === "/" || target.pathname.startsWith("/ui/")) || target.pathname.startsWith("/ui/static/")) return;
  // Same page, another fragment ("Skip to content"): the browser's own jump and focus.
  if (target.pathname === location.pathname && target.search === location.search && target.hash) return;
  event.preventDefault();
  if (target.pathname === location.pathname && target.search === location.search) return;
  navigate(target.pathname + target.search + target.hash);
});

window.addEventListener("popstate", () => show());
setUnauthorizedHandler((message) => {
  signOut();
  showSignIn(message);
});
takeTokenFromFragment();
show();
