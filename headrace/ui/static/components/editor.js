// The flow YAML editor: CodeMirror 6 with YAML highlighting, line numbers, search, undo
// history, bracket matching and folding; completion of keys and values from the flow
// JSON Schema (schema_complete.js); and the server's validation as you type
// (`POST /api/v1/flows/validate`, 400 ms after the last keystroke), each error or
// warning shown as a lint mark at its line and listed in the "Problems" region.
//
// Tab indents (CodeMirror's `indentWithTab`); Escape then Tab leaves the editor, as
// CodeMirror documents for keyboard users. Ctrl/Cmd-S calls `onSave`.
//
// createFlowEditor({doc, schema, onChange, onSave, onValidated, signal}) -> {element,
// view, text(), setText(text), focus(), goTo(line, column), validateNow(), destroy()}.
// `onValidated(result)` gets `{valid, errors, warnings, namespace, id}` for the text on
// screen, or `{failed: message}` when the check itself failed.

import { api } from "../api.js";
import { h } from "../dom.js";
import { SchemaCompleter } from "./schema_complete.js";
import { cursorContext } from "./yaml_context.js";
import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap, pickedCompletion } from "@codemirror/autocomplete";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { bracketMatching, defaultHighlightStyle, foldGutter, foldKeymap, indentOnInput, indentUnit, syntaxHighlighting } from "@codemirror/language";
import { lintGutter, lintKeymap, setDiagnostics } from "@codemirror/lint";
import { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
import { EditorState, Prec } from "@codemirror/state";
import {
  crosshairCursor,
  drawSelection,
  dropCursor,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  rectangularSelection,
} from "@codemirror/view";

const VALIDATE_DELAY_MS = 400;
let editorCount = 0;

export function createFlowEditor({ doc = "", schema = null, onChange = () => {}, onSave = () => {}, onValidated = () => {}, signal } = {}) {
  const number = ++editorCount;
  const host = h("div", { class: "editor-host" });
  const problems = problemsRegion(number);
  const help = h(
    "p",
    { class: "editor-help muted", id: `editor-help-${number}` },
    kbd("Ctrl"), "+", kbd("Space"), " completes · ", kbd("Ctrl"), "+", kbd("S"), " saves · ",
    kbd("Ctrl"), "+", kbd("F"), " searches · ", kbd("Tab"), " indents; ", kbd("Esc"), " then ", kbd("Tab"), " leaves the editor",
  );
  const element = h("div", { class: "flow-editor" }, h("div", { class: "editor-main" }, host, help), problems.element);

  let timer = null;
  let inflight = null;
  const completer = schema ? new SchemaCompleter(schema) : null;

  const view = new EditorView({
    parent: host,
    state: EditorState.create({
      doc,
      extensions: [
        Prec.highest(keymap.of([{ key: "Mod-s", preventDefault: true, run: () => (onSave(), true) }])),
        lineNumbers(),
        highlightActiveLineGutter(),
        foldGutter(),
        lintGutter(),
        highlightSpecialChars(),
        history(),
        drawSelection(),
        dropCursor(),
        EditorState.allowMultipleSelections.of(true),
        EditorState.tabSize.of(2),
        indentUnit.of("  "),
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        bracketMatching(),
        closeBrackets(),
        autocompletion({ override: completer ? [schemaSource(completer)] : [], icons: false }),
        rectangularSelection(),
        crosshairCursor(),
        highlightActiveLine(),
        highlightSelectionMatches(),
        yaml(),
        keymap.of([
          ...closeBracketsKeymap,
          ...defaultKeymap,
          ...searchKeymap,
          ...historyKeymap,
          ...foldKeymap,
          ...completionKeymap,
          ...lintKeymap,
          indentWithTab,
        ]),
        EditorView.contentAttributes.of({ "aria-label": "Flow YAML", "aria-describedby": `editor-help-${number}` }),
        EditorView.updateListener.of((update) => {
          if (!update.docChanged) return;
          onChange(update.state.doc.toString());
          schedule();
        }),
      ],
    }),
  });

  function schedule() {
    clearTimeout(timer);
    problems.checking();
    timer = setTimeout(validateNow, VALIDATE_DELAY_MS);
  }

  // Validates the text on screen now; resolves to the result (null when superseded).
  async function validateNow() {
    clearTimeout(timer);
    inflight?.abort();
    const controller = new AbortController();
    inflight = controller;
    const checked = view.state.doc;
    problems.checking();
    let result;
    try {
      result = await api("flows/validate", { method: "POST", yaml: checked.toString(), signal: controller.signal });
    } catch (error) {
      if (controller.signal.aborted || signal?.aborted) return null;
      problems.failed(error.message);
      onValidated({ failed: error.message });
      return { failed: error.message };
    }
    if (controller.signal.aborted || view.state.doc !== checked) return null;
    const found = [
      ...(result.errors || []).map((e) => ({ ...e, severity: "error" })),
      ...(result.warnings || []).map((w) => ({ ...w, severity: "warning" })),
    ];
    view.dispatch(setDiagnostics(view.state, found.map((problem) => diagnostic(view.state.doc, problem))));
    problems.show(found, (problem) => goTo(problem.line, problem.column));
    const summary = { ...result, errors: result.errors || [], warnings: result.warnings || [] };
    onValidated(summary);
    return summary;
  }

  function goTo(line, column) {
    const doc = view.state.doc;
    const target = doc.line(Math.min(Math.max(line || 1, 1), doc.lines));
    const pos = Math.min(target.from + Math.max((column || 1) - 1, 0), target.to);
    view.dispatch({ selection: { anchor: pos }, scrollIntoView: true });
    view.focus();
  }

  function setText(text) {
    view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
  }

  function destroy() {
    clearTimeout(timer);
    inflight?.abort();
    view.destroy();
  }
  signal?.addEventListener("abort", destroy);

  return { element, view, text: () => view.state.doc.toString(), setText, focus: () => view.focus(), goTo, validateNow, destroy };
}

function kbd(text) {
  return h("kbd", {}, text);
}

// The completion source: keys and values from the schema at the cursor's key path.
function schemaSource(completer) {
  return (context) => {
    const found = cursorContext(context.state.doc.toString(), context.pos);
    if (!found) return null;
    if (found.kind === "key" && !found.word && !context.explicit) return null;
    const options = completer.complete(found);
    // Nothing to offer once the word is complete: Enter then starts a new line rather
    // than "accepting" what is already there. (No `validFor`: asked again each keystroke.)
    if (!options.length || options.some((o) => o.label === found.word)) return null;
    // Mending a key that is already written (`mesage:` -> `message:`): replace the rest
    // of the word and its colon too, keeping the value after it.
    const line = context.state.doc.lineAt(context.pos);
    const rest = found.kind === "key" ? /^[\w.-]*\s*:/.exec(line.text.slice(context.pos - line.from)) : null;
    // (Not by widening `to`: the menu filters its options by the text up to `to`.)
    if (rest) return { from: found.from, options: options.map((o) => ({ ...o, apply: mendKey(o.label, rest[0].length) })) };
    return { from: found.from, options };
  };
}

// Applies a key completion over the rest of the key already written and its colon.
function mendKey(label, restLength) {
  return (view, completion, from, to) => {
    view.dispatch({
      changes: { from, to: to + restLength, insert: `${label}:` },
      selection: { anchor: from + label.length + 1 },
      annotations: pickedCompletion.of(completion),
    });
  };
}

// A server problem (1-based line and column) as a CodeMirror diagnostic: from its column
// to the end of the word there, or the whole line when it names no column.
function diagnostic(doc, problem) {
  const line = doc.line(Math.min(Math.max(problem.line || 1, 1), doc.lines));
  let from = problem.column ? Math.min(line.from + problem.column - 1, line.to) : line.from;
  let to = from + (doc.sliceString(from, line.to).match(/^\S+/)?.[0].length || 0);
  if (to === from) {
    from = line.from + line.text.match(/^\s*/)[0].length;
    to = line.to;
  }
  return {
    from,
    to,
    severity: problem.severity,
    message: problem.hint ? `${problem.message}\n${problem.hint}` : problem.message,
    source: problem.path || undefined,
  };
}

// The "Problems" region: one line per problem ("Line N: message", warnings as "Line N:
// warning: message"), each a button that moves the cursor there; "No problems" else.
function problemsRegion(number) {
  const status = h("p", { class: "problems-status", "aria-live": "polite", id: `problems-status-${number}` }, "Checking…");
  const list = h("ul", { class: "problems-list" });
  const element = h(
    "section",
    { class: "problems", role: "region", "aria-label": "Problems" },
    h("h2", { class: "problems-title" }, "Problems"),
    status,
    list,
  );
  return {
    element,
    checking() {
      element.classList.add("is-checking");
    },
    failed(message) {
      element.classList.remove("is-checking");
      status.textContent = `Could not check the flow: ${message}`;
      status.className = "problems-status problems-failed";
    },
    show(problems, jump) {
      element.classList.remove("is-checking");
      const errors = problems.filter((p) => p.severity === "error").length;
      const warnings = problems.length - errors;
      status.className = `problems-status ${errors ? "has-errors" : warnings ? "has-warnings" : "is-clean"}`;
      status.textContent = problems.length ? countText(errors, warnings) : "No problems";
      list.replaceChildren(...problems.map((problem) => problemItem(problem, jump)));
    },
  };
}

function countText(errors, warnings) {
  const parts = [];
  if (errors) parts.push(`${errors} error${errors === 1 ? "" : "s"}`);
  if (warnings) parts.push(`${warnings} warning${warnings === 1 ? "" : "s"}`);
  return parts.join(", ");
}

function problemItem(problem, jump) {
  const where = problem.line ? `Line ${problem.line}: ` : "";
  const label = `${where}${problem.severity === "warning" ? "warning: " : ""}${problem.message}`;
  const button = h("button", { type: "button", class: "problem-jump", onclick: () => jump(problem) }, label);
  return h(
    "li",
    { class: `problem problem-${problem.severity}` },
    button,
    problem.path ? h("span", { class: "problem-path mono" }, problem.path) : null,
    problem.hint ? hintNode(problem.hint) : null,
  );
}

// A hint; the long "known types: a, b, c..." lists fold away behind a disclosure.
function hintNode(hint) {
  const match = /^(.*?)(?:;\s*)?\b(known [\w ]+?):\s*(.+)$/s.exec(hint);
  if (!match) return h("p", { class: "problem-hint" }, hint);
  const [, lead, what, rest] = match;
  return h(
    "div",
    { class: "problem-hint" },
    lead.trim() ? h("p", {}, lead.trim().replace(/[;,]$/, "")) : null,
    h("details", {}, h("summary", {}, what.charAt(0).toUpperCase() + what.slice(1)), h("p", { class: "mono" }, rest)),
  );
}
