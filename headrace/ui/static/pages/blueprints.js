// Blueprints (/ui/blueprints): the example flows shipped with headrace, as a gallery of
// cards (`GET /api/v1/blueprints`). Each shows its YAML and its topology on demand, and
// "Use <id>" copies it into a namespace (`POST /api/v1/blueprints/{id}/copy`), then opens
// the new flow's page.

import { api } from "../api.js";
import { clear, describeError, errorBox, h, inlineCode, link, toast } from "../dom.js";
import { renderTopology } from "../components/topology.js";
import { parseYaml } from "../components/yaml_value.js";

const LAST_NAMESPACE = "headrace.blueprints.namespace";
const DEFAULT_NAMESPACE = "company.team";
// headrace/flow/model.py's NAMESPACE_PATTERN and ID_PATTERN: said here before a round trip.
const NAMESPACE_PATTERN = /^[a-z0-9][a-z0-9._-]*$/;
const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_-]*$/;

export async function render(main, _params, { signal, query, setTitle, navigate }) {
  setTitle("Blueprints");
  let answer;
  try {
    answer = await api("blueprints", { signal });
  } catch (error) {
    if (error.status !== 404) throw error;
    main.append(h("h1", {}, "Blueprints"), errorBox(new Error("This gateway has no blueprints API (GET /api/v1/blueprints): update headrace.")));
    return;
  }
  const blueprints = answer.results || [];

  const search = h("input", {
    type: "search",
    id: "bp-search",
    class: "bp-search",
    "aria-label": "Search blueprints",
    placeholder: "Search by name, task or trigger type…",
    value: query.get("q") || "",
    autocomplete: "off",
  });
  const count = h("p", { class: "muted bp-count", "aria-live": "polite" });
  const gallery = h("div", { class: "bp-gallery" });
  const cards = blueprints.map((blueprint) => [blueprint, card(blueprint, { navigate })]);

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Blueprints"), h("span", { class: "spacer" }), search),
    h("p", { class: "bp-intro" }, "Ready-made flows from headrace's examples. Use one to copy it into a namespace as a new flow, then change it in the editor."),
    count,
    gallery,
  );

  const apply = () => {
    const terms = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = cards.filter(([blueprint]) => terms.every((term) => haystack(blueprint).includes(term)));
    clear(gallery, shown.map(([, element]) => element));
    if (!blueprints.length) clear(gallery, h("p", { class: "empty" }, "This gateway has no blueprints."));
    else if (!shown.length) gallery.append(h("p", { class: "empty" }, `No blueprint matches “${search.value.trim()}”.`));
    count.textContent = terms.length ? `${shown.length} of ${blueprints.length} blueprints` : `${blueprints.length} blueprint${blueprints.length === 1 ? "" : "s"}`;
    const url = new URL(location.href);
    if (search.value.trim()) url.searchParams.set("q", search.value.trim());
    else url.searchParams.delete("q");
    history.replaceState(null, "", url.pathname + url.search);
  };
  search.addEventListener("input", apply);
  apply();
}

function haystack(blueprint) {
  return [blueprint.id, blueprint.title, blueprint.description, blueprint.namespace, blueprint.flowId, ...(blueprint.taskTypes || []), ...(blueprint.triggerTypes || [])]
    .filter(Boolean)
    .join(" ")
    .toLowerCase();
}

function card(blueprint, { navigate }) {
  const base = `bp-${blueprint.id}`;
  const titleId = `${base}-title`;
  const inputs = typeof blueprint.inputs === "number" ? blueprint.inputs : Array.isArray(blueprint.inputs) ? blueprint.inputs.length : 0;
  const yamlPanel = h("div", { class: "bp-panel", id: `${base}-yaml`, hidden: true }, h("pre", { class: "code bp-yaml" }, blueprint.source || ""));
  const topologyPanel = h("div", { class: "bp-panel bp-topology", id: `${base}-topology`, hidden: true });
  const element = h("article", { class: "card bp-card", "aria-labelledby": titleId });
  const description = rest(blueprint.description, blueprint.title);

  const disclosure = (label, openLabel, panel, onOpen) => {
    const button = h("button", { type: "button", class: "bp-toggle", "aria-expanded": "false", "aria-controls": panel.id }, label);
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      button.textContent = open ? openLabel : label;
      panel.hidden = !open;
      if (open) onOpen?.();
      element.classList.toggle("expanded", !yamlPanel.hidden || !topologyPanel.hidden);
    });
    return button;
  };
  let drawn = false;
  const drawTopology = () => {
    if (drawn) return;
    drawn = true;
    try {
      renderTopology(topologyPanel, parseYaml(blueprint.source) || {}, { navigate });
    } catch (error) {
      clear(topologyPanel, errorBox(error));
    }
  };

  // (the DOM's own append would write null as text: keep the optional parts out)
  const parts = [
    h(
      "header",
      { class: "bp-head" },
      h("h2", { id: titleId, title: blueprint.title || blueprint.id }, inlineCode(blueprint.title || blueprint.id)),
      h("code", { class: "bp-id muted" }, `${blueprint.namespace || "examples"}.${blueprint.flowId || blueprint.id}`),
    ),
    description ? h("p", { class: "bp-description" }, inlineCode(description)) : null,
    h(
      "ul",
      { class: "bp-badges", "aria-label": "Uses" },
      (blueprint.triggerTypes || []).map((type) => h("li", { class: "badge bp-trigger", title: `${type} trigger` }, `${type} trigger`)),
      (blueprint.taskTypes || []).map((type) => h("li", { class: "badge" }, type)),
      inputs ? h("li", { class: "badge bp-inputs" }, `${inputs} input${inputs === 1 ? "" : "s"}`) : null,
    ),
    h(
      "div",
      { class: "bp-actions" },
      h("button", { type: "button", class: "primary", onclick: () => openUseDialog(element, blueprint, navigate) }, `Use ${blueprint.id}`),
      h("span", { class: "spacer" }),
      disclosure("View YAML", "Hide YAML", yamlPanel),
      disclosure("Topology", "Hide topology", topologyPanel, drawTopology),
    ),
    h("div", { class: "bp-panels" }, yamlPanel, topologyPanel),
  ];
  element.append(...parts.filter(Boolean));
  return element;
}

// The description without its first sentence when that is the title already.
function rest(description, title) {
  const text = String(description || "").trim();
  if (!title || !text.startsWith(title)) return text;
  return text.slice(title.length).replace(/^[.!?]?\s*/, "");
}

function lastNamespace() {
  try {
    return localStorage.getItem(LAST_NAMESPACE) || DEFAULT_NAMESPACE;
  } catch {
    return DEFAULT_NAMESPACE;
  }
}

// The copy dialog: a namespace (the blueprint's own by default, so that the examples
// that name each other still do) and an optional new id.
function openUseDialog(owner, blueprint, navigate) {
  const base = `use-${blueprint.id}`;
  const namespace = h("input", { id: `${base}-namespace`, name: "namespace", required: true, value: blueprint.namespace || lastNamespace(), autocomplete: "off", spellcheck: "false", "aria-describedby": `${base}-namespace-help` });
  const flowId = h("input", { id: `${base}-id`, name: "id", placeholder: blueprint.flowId || blueprint.id, autocomplete: "off", spellcheck: "false", "aria-describedby": `${base}-id-help` });
  const message = h("div", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Copy and open");
  const cancel = h("button", { type: "button" }, "Cancel");
  const form = h(
    "form",
    { method: "dialog", novalidate: true },
    h("h2", {}, `Use the ${blueprint.id} blueprint`),
    h("p", { class: "muted" }, "Copies its YAML as a new flow in the namespace you give, and opens it in the editor."),
    h(
      "div",
      { class: "field" },
      h("label", { for: namespace.id }, "Namespace"),
      namespace,
      h("small", { class: "help", id: `${base}-namespace-help` }, "Lowercase words separated by dots, e.g. company.team."),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: flowId.id }, "Flow id ", h("span", { class: "muted type" }, "optional")),
      flowId,
      h("small", { class: "help", id: `${base}-id-help` }, `Leave empty to keep “${blueprint.flowId || blueprint.id}”.`),
    ),
    message,
    h("div", { class: "actions bp-dialog-actions" }, cancel, submit),
  );
  const dialog = h("dialog", { class: "bp-dialog", "aria-label": `Use ${blueprint.id}` }, form);
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ns = namespace.value.trim();
    const id = flowId.value.trim();
    if (!NAMESPACE_PATTERN.test(ns)) {
      showMessage(message, ns ? `“${ns}” is no namespace: use lowercase letters, digits, dots, - and _ (e.g. company.team).` : "Give a namespace.");
      namespace.focus();
      return;
    }
    if (id && !ID_PATTERN.test(id)) {
      showMessage(message, `“${id}” is no flow id: use letters, digits, - and _.`);
      flowId.focus();
      return;
    }
    submit.disabled = true;
    message.hidden = true;
    try {
      const body = { namespace: ns };
      if (id) body.id = id;
      const created = await api(`blueprints/${encodeURIComponent(blueprint.id)}/copy`, { method: "POST", body });
      try {
        localStorage.setItem(LAST_NAMESPACE, ns);
      } catch {
        // storage refused (private mode): the default stays
      }
      const target = { namespace: created?.namespace || ns, id: created?.id || id || blueprint.flowId || blueprint.id };
      dialog.close();
      toast(`Copied ${blueprint.id} to ${target.namespace}.${target.id}`);
      navigate(`/ui/flows/${encodeURIComponent(target.namespace)}/${encodeURIComponent(target.id)}`);
    } catch (error) {
      if (error.status === 409) {
        const existing = `/ui/flows/${encodeURIComponent(ns)}/${encodeURIComponent(id || blueprint.flowId || blueprint.id)}`;
        showMessage(message, `The flow ${ns}.${id || blueprint.flowId || blueprint.id} exists already. `, link(existing, "Open it"), ", or give another flow id.");
        flowId.focus();
      } else {
        showMessage(message, describeError(error));
      }
    } finally {
      submit.disabled = false;
    }
  });
  owner.append(dialog);
  dialog.showModal();
  namespace.select();
}

function showMessage(box, ...parts) {
  clear(box, ...parts);
  box.hidden = false;
}

