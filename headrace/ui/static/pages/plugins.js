// Plugins (`/ui/plugins`, `/ui/plugins/{type}`): every task type the workers run, with
// its Kestra aliases, and one type's properties and outputs read from its JSON Schema
// (what `headrace plugins list` and `headrace plugins describe` print).

import { api } from "../api.js";
import { h, inlineCode, prose } from "../dom.js";

export async function render(main, params, { setTitle }) {
  if (params.type) return renderOne(main, params.type, setTitle);
  setTitle("Plugins");
  const plugins = await api("plugins");
  const search = h("input", { id: "plugin-search", type: "search", placeholder: "log, dbt, Kestra alias…" });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "list" },
    h("thead", {}, h("tr", {}, h("th", {}, "Type"), h("th", {}, "Kind"), h("th", {}, "What it does"), h("th", {}, "Kestra aliases"))),
    body,
  );
  const count = h("p", { class: "muted" });
  const show = () => {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = plugins.filter((p) => {
      const text = [p.type, p.kind, p.summary, ...(p.aliases || [])].join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    });
    body.replaceChildren(
      ...shown.map((p) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `/ui/plugins/${encodeURIComponent(p.type)}` }, h("code", {}, p.type))),
          h("td", {}, h("span", { class: "badge" }, p.kind)),
          h("td", {}, inlineCode(p.summary || "")),
          h("td", { class: "aliases" }, (p.aliases || []).map((a) => h("div", {}, h("code", {}, a)))),
        ),
      ),
    );
    count.textContent = `${shown.length} of ${plugins.length} task types`;
  };
  search.addEventListener("input", show);
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Plugins")),
    h("p", { class: "muted" }, "The task types this server's workers run. A flow names one in a task's ", h("code", {}, "type"), ", by its name or its Kestra alias."),
    h("div", { class: "filters" }, h("div", { class: "field" }, h("label", { for: "plugin-search" }, "Search plugins"), search)),
    count,
    table,
  );
  show();
}

async function renderOne(main, type, setTitle) {
  setTitle(type);
  const plugin = await api(`plugins/${encodeURIComponent(type)}`);
  const schema = plugin.properties || {};
  main.append(
    h("p", {}, h("a", { href: "/ui/plugins" }, "← All plugins")),
    h("div", { class: "page-head" }, h("h1", {}, h("code", {}, plugin.type)), h("span", { class: "badge" }, plugin.kind)),
    h("div", { class: "card prose" }, prose(plugin.description || plugin.summary)),
    plugin.aliases?.length ? h("p", {}, "Kestra aliases: ", plugin.aliases.map((a) => h("code", { class: "badge" }, a))) : null,
    h("h2", {}, "Properties"),
    propertiesTable(schema, schema),
    h("h2", {}, "Outputs"),
    plugin.outputs ? propertiesTable(plugin.outputs, plugin.outputs) : h("p", { class: "muted" }, "This task type has no outputs."),
  );
}

// One row per property: name, type, required, default, description; nested objects
// (`$ref` to `$defs`) get their own rows under the parent's name.
function propertiesTable(schema, root) {
  const rows = [];
  collect(schema, root, "", rows, new Set());
  if (!rows.length) return h("p", { class: "muted" }, "None.");
  return h(
    "table",
    { class: "list" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Required"), h("th", {}, "Default"), h("th", {}, "Description"))),
    h("tbody", {}, rows),
  );
}

function collect(schema, root, prefix, rows, seen) {
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const property = resolve(raw, root);
    const path = prefix ? `${prefix}.${name}` : name;
    rows.push(
      h(
        "tr",
        {},
        h("td", {}, h("code", {}, path)),
        h("td", {}, typeName(raw, root)),
        h("td", {}, required.has(name) ? "yes" : ""),
        h("td", {}, property.default === undefined ? "" : h("code", {}, JSON.stringify(property.default))),
        h("td", {}, inlineCode(raw.description || property.description || "")),
      ),
    );
    const ref = raw.$ref || raw.anyOf?.find((a) => a.$ref)?.$ref;
    if (ref && !seen.has(ref) && property.properties) {
      collect(property, root, path, rows, new Set([...seen, ref]));
    }
  }
}

function resolve(schema, root) {
  if (schema.$ref) return resolve(lookup(schema.$ref, root), root);
  const ref = schema.allOf?.length === 1 ? schema.allOf[0].$ref : null;
  return ref ? { ...resolve(lookup(ref, root), root), ...schema } : schema;
}

function lookup(ref, root) {
  return ref.replace(/^#\//, "").split("/").reduce((node, key) => node?.[key], root) || {};
}

function typeName(schema, root) {
  if (schema.$ref) {
    const target = lookup(schema.$ref, root);
    if (target.enum) return target.enum.join(" | ");
    return target.title || schema.$ref.split("/").pop();
  }
  if (schema.enum) return schema.enum.join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.anyOf) return schema.anyOf.map((s) => typeName(s, root)).filter((t) => t !== "null").join(" or ");
  if (schema.type === "array") return `list of ${schema.items ? typeName(schema.items, root) : "any"}`;
  if (schema.type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
    return `map of ${typeName(schema.additionalProperties, root)}`;
  }
  return schema.type || "any";
}
