// Namespaces (`/ui/namespaces`): every namespace that holds flows, with links to its page
// (its flows and its files), and a field to open any namespace (one may hold files only).

import { api } from "../api.js";
import { h } from "../dom.js";

export async function render(main, _params, { setTitle, navigate }) {
  setTitle("Namespaces");
  const { results } = await api("namespaces");
  const name = h("input", { id: "open-namespace", type: "text", placeholder: "company.team", required: true, pattern: "[A-Za-z0-9_.\\-]+" });
  const open = h(
    "form",
    { class: "filters", onsubmit: (event) => { event.preventDefault(); if (name.value.trim()) navigate(`/ui/namespaces/${encodeURIComponent(name.value.trim())}`); } },
    h("div", { class: "field" }, h("label", { for: "open-namespace" }, "Open a namespace"), name),
    h("button", { type: "submit" }, "Open"),
  );
  const rows = results.map((r) =>
    h("tr", {}, h("td", {}, h("a", { href: `/ui/namespaces/${encodeURIComponent(r.namespace)}` }, r.namespace)), h("td", { class: "num" }, r.flows)),
  );
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Namespaces")),
    h("p", { class: "muted" }, "A namespace groups flows and keeps files beside them (SQL, scripts, a dbt project) that tasks read with ", h("code", {}, "namespaceFiles"), "."),
    open,
    rows.length
      ? h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "Namespace"), h("th", { class: "num" }, "Flows"))), h("tbody", {}, rows))
      : h("p", { class: "empty" }, "No flows yet. ", h("a", { href: "/ui/blueprints" }, "Start from a blueprint"), " or ", h("a", { href: "/ui/flows/new" }, "write a flow"), "."),
  );
}
