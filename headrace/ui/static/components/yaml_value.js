// YAML text as plain JS values, for the pages that outline a flow without the server's
// parse (the flows list's descriptions and task counts, home's flow list, the blueprints'
// topology): the first document, read from the Lezer YAML syntax tree the editor uses
// too. It forgives errors (a broken part reads as null) and skips what an outline needs
// not (anchors resolve to their value, aliases to null, tags are dropped). The server
// stays the judge of what a flow means.
//
// parseYaml(text) -> value (undefined for an empty text).

import { parser } from "@lezer/yaml";

const SKIPPED = new Set(["Comment", "Anchor", "Tag", ":", ",", "[", "]", "{", "}", "-", "?", "⚠"]);

export function parseYaml(text) {
  const tree = parser.parse(text);
  const document = tree.topNode.getChild("Document");
  if (!document) return undefined;
  const node = valueChild(document);
  return node ? read(node, text) : null;
}

// The first child of `node` that holds a value (not punctuation, comments, keys).
function valueChild(node) {
  for (let child = node.firstChild; child; child = child.nextSibling) {
    if (!SKIPPED.has(child.name) && child.name !== "Key" && child.name !== "DirectiveEnd" && child.name !== "DocEnd" && child.name !== "Directive") return child;
  }
  return null;
}

function read(node, text) {
  switch (node.name) {
    case "BlockMapping":
    case "FlowMapping":
      return readMapping(node, text);
    case "BlockSequence":
    case "FlowSequence":
      return node.getChildren("Item").map((item) => {
        const value = valueChild(item);
        return value ? read(value, text) : null;
      });
    case "Literal":
      return plain(text.slice(node.from, node.to));
    case "QuotedLiteral":
      return unquote(text.slice(node.from, node.to));
    case "BlockLiteral":
      return blockScalar(node, text);
    case "Tagged":
    case "Anchored": {
      const inner = valueChild(node);
      return inner ? read(inner, text) : null;
    }
    default:
      return null;
  }
}

function readMapping(node, text) {
  const result = {};
  for (const pair of node.getChildren("Pair")) {
    const key = pair.getChild("Key");
    const keyValue = key ? valueChild(key) : null;
    if (!keyValue) continue;
    const name = String(read(keyValue, text));
    const value = valueChild(pair);
    // defineProperty: a key named `__proto__` is a key, not the object's prototype.
    Object.defineProperty(result, name, { value: value ? read(value, text) : null, enumerable: true, writable: true, configurable: true });
  }
  return result;
}

// A plain scalar: YAML 1.2's core schema (null, booleans, numbers), else text; a plain
// scalar over several lines folds into one.
function plain(raw) {
  const value = raw.split(/\n\s*/).join(" ").trim();
  if (/^(~|null|Null|NULL)?$/.test(value)) return null;
  if (/^(true|True|TRUE)$/.test(value)) return true;
  if (/^(false|False|FALSE)$/.test(value)) return false;
  if (/^[-+]?[0-9]+$/.test(value)) return Number(value);
  if (/^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/.test(value)) return Number(value);
  return value;
}

const ESCAPES = { n: "\n", t: "\t", r: "\r", "0": "\0", '"': '"', "\\": "\\", "/": "/", " ": " ", e: "\x1b" };

function unquote(raw) {
  const quote = raw[0];
  const body = raw.slice(1, raw.endsWith(quote) && raw.length > 1 ? -1 : undefined).replace(/[ \t]*\n[ \t]*/g, " ");
  if (quote === "'") return body.replaceAll("''", "'");
  return body.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/g, (_, code) => {
    if (code.length > 1) return String.fromCodePoint(parseInt(code.slice(1), 16));
    return ESCAPES[code] ?? code;
  });
}

// `|` keeps lines, `>` folds them into one (blank lines stay breaks); `-` strips the
// final line break, `+` keeps every trailing one, neither keeps one.
function blockScalar(node, text) {
  const header = node.getChild("BlockLiteralHeader");
  const content = node.getChild("BlockLiteralContent");
  const indicator = header ? text.slice(header.from, header.to) : "|";
  if (!content) return "";
  const lines = text.slice(content.from, content.to).split("\n");
  const indents = lines.filter((line) => line.trim()).map((line) => line.match(/^ */)[0].length);
  const cut = indents.length ? Math.min(...indents) : 0;
  const stripped = lines.map((line) => line.slice(cut));
  let value;
  if (indicator.startsWith(">")) {
    value = stripped.reduce((out, line, index) => {
      if (index === 0) return line;
      if (!line.trim() || /^\s/.test(line)) return `${out}\n${line}`;
      return out.endsWith("\n") || out === "" ? out + line : `${out} ${line}`;
    }, "");
  } else {
    value = stripped.join("\n");
  }
  const body = value.replace(/\n+$/, "");
  if (indicator.includes("-")) return body;
  if (indicator.includes("+")) return value + "\n";
  return `${body}\n`;
}
