// A form built from a flow's typed inputs (or a Pause's `onResume` inputs): one labelled
// field per input, of the HTML type that fits it. The values it gives are JSON values the
// API checks again (wrong types are refused there with the input named).
//
// inputForm(inputs, {submitLabel, onSubmit, extra}) -> <form>; `onSubmit(values)` may
// throw an ApiError, whose message (and per-input details) is shown in the form.

import { describeError, h, toLocalInput } from "../dom.js";

let formCount = 0;

export function inputForm(inputs, { submitLabel = "Start", onSubmit, extra = [], emptyText = "This flow takes no inputs." }) {
  const prefix = `input-${++formCount}`;
  const readers = [];
  const fields = (inputs || []).map((input) => {
    const { control, read } = controlFor(input, `${prefix}-${input.id}`);
    readers.push([input, read]);
    const label = input.displayName || input.id;
    return h(
      "div",
      { class: "field" },
      h("label", { for: control.id }, label, input.required === false || input.defaults !== undefined ? "" : h("span", { class: "required", "aria-hidden": "true" }, " *"), h("span", { class: "muted type" }, ` ${input.type}`)),
      control,
      input.description ? h("small", { class: "help", id: `${control.id}-help` }, input.description) : null,
    );
  });
  const message = h("div", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const form = h("form", { class: "input-form", novalidate: true }, fields, extra, message, h("div", { class: "actions" }, submit));
  if (!inputs || !inputs.length) form.prepend(h("p", { class: "muted" }, emptyText));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    const values = {};
    try {
      for (const [input, read] of readers) {
        const value = read();
        if (value !== undefined) values[input.id] = value;
      }
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      await onSubmit(values);
    } catch (error) {
      message.textContent = describeError(error);
      message.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function controlFor(input, id) {
  const type = String(input.type || "STRING").toUpperCase();
  const common = { id, name: input.id, required: input.required !== false && input.defaults === undefined };
  if (input.description) common["aria-describedby"] = `${id}-help`;
  const fallback = input.defaults;
  const blank = (text) => text === "" && (input.required === false || fallback !== undefined);

  if (type === "BOOLEAN") {
    const control = h("input", { ...common, type: "checkbox", required: false });
    control.checked = fallback === true || fallback === "true";
    return { control, read: () => control.checked };
  }
  if (type === "SELECT" || type === "ENUM") {
    const control = h("select", common, input.required === false ? h("option", { value: "" }, "—") : null, (input.values || []).map((v) => h("option", { value: v }, v)));
    if (fallback !== undefined) control.value = fallback;
    return { control, read: () => (control.value === "" ? undefined : control.value) };
  }
  if (type === "INT" || type === "FLOAT") {
    const control = h("input", { ...common, type: "number", step: type === "INT" ? "1" : "any", min: input.min, max: input.max });
    if (fallback !== undefined) control.value = fallback;
    return {
      control,
      read: () => {
        if (blank(control.value)) return undefined;
        const number = Number(control.value);
        if (control.value === "" || Number.isNaN(number)) throw new Error(`${input.id}: enter a number`);
        return number;
      },
    };
  }
  if (type === "JSON" || type === "ARRAY") {
    const control = h("textarea", { ...common, rows: 4, class: "mono", placeholder: type === "ARRAY" ? '["a", "b"]' : '{"key": "value"}' });
    if (fallback !== undefined) control.value = JSON.stringify(fallback, null, 2);
    return {
      control,
      read: () => {
        if (blank(control.value.trim())) return undefined;
        try {
          return JSON.parse(control.value);
        } catch {
          throw new Error(`${input.id}: not valid JSON`);
        }
      },
    };
  }
  const htmlType = type === "DATETIME" ? "datetime-local" : type === "URI" ? "url" : "text";
  const control = h("input", { ...common, type: htmlType, pattern: input.validator });
  if (fallback !== undefined && fallback !== null) control.value = type === "DATETIME" ? toLocalInput(fallback) : fallback;
  return {
    control,
    read: () => {
      if (blank(control.value)) return undefined;
      if (type === "DATETIME" && control.value) return new Date(control.value).toISOString();
      return control.value;
    },
  };
}
