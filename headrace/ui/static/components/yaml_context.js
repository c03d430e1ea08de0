// Where the cursor stands in a YAML text being typed, for completion: the key path from
// the document's root (`["tasks", "[]", "then", "[]"]`: keys, and "[]" for a list item),
// whether a key or a value is being typed, and the keys already written in each mapping
// on the way (their scalar values too: a task's `type` decides its other keys).
//
// It reads indentation line by line rather than a syntax tree, because the text under
// the cursor is usually unfinished YAML that no parser reads the way the writer means.

const KEY = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\-?:,[\]{}][^#]*?|-[^\s#][^#]*?)\s*:(?=\s|$)/;
const BLOCK_SCALAR = /^[|>][-+0-9]*\s*(#.*)?$/;

// One line's shape: its indentation, the columns of its leading `- `, and its key.
export function analyzeLine(text) {
  const indent = text.match(/^ */)[0].length;
  const info = { indent, dashes: [], key: null, keyCol: -1, value: "", rest: "", blank: false, comment: false, contentCol: indent };
  const rest = text.slice(indent);
  if (!rest.trim()) return { ...info, blank: true };
  if (rest.startsWith("#")) return { ...info, comment: true };
  let pos = indent;
  while (text[pos] === "-" && (pos + 1 === text.length || text[pos + 1] === " " || text[pos + 1] === "\t")) {
    info.dashes.push(pos);
    pos += 1;
    while (text[pos] === " " || text[pos] === "\t") pos += 1;
  }
  info.contentCol = pos;
  info.rest = text.slice(pos).trim();
  const match = KEY.exec(text.slice(pos));
  if (match) {
    info.key = unquoteKey(match[1].trim());
    info.keyCol = pos;
    info.value = text.slice(pos + match[0].length).replace(/(^|\s)#.*$/, "").trim();
  }
  return info;
}

function unquoteKey(key) {
  if (key.startsWith('"') && key.endsWith('"')) return key.slice(1, -1);
  if (key.startsWith("'") && key.endsWith("'")) return key.slice(1, -1).replaceAll("''", "'");
  return key;
}

// Every line analysed, with the lines inside block scalars (`key: |`, `- >`) marked
// `content`.
export function analyzeText(text) {
  const lines = text.split("\n").map(analyzeLine);
  let scalarParent = -1; // lines more indented than this belong to a block scalar
  for (const line of lines) {
    if (scalarParent >= 0) {
      if (line.blank || line.indent > scalarParent) {
        line.content = true;
        continue;
      }
      scalarParent = -1;
    }
    if (line.key !== null && BLOCK_SCALAR.test(line.value)) scalarParent = line.keyCol;
    else if (line.key === null && line.dashes.length && BLOCK_SCALAR.test(line.rest)) scalarParent = line.dashes.at(-1);
  }
  return lines;
}

function skipped(line) {
  return line.blank || line.comment || line.content;
}

// The keys (and their one-line values) of the mapping whose keys sit at column `col`
// around line `anchor`, without line `except` (the key being typed).
export function mappingKeys(lines, anchor, col, except = -1) {
  const keys = new Map();
  for (let j = anchor; j >= 0; j -= 1) {
    const line = lines[j];
    if (skipped(line)) continue;
    if (line.keyCol === col) {
      if (j !== except) keys.set(line.key, line.value);
      if (line.dashes.length) break; // the item's first line: the mapping starts here
      continue;
    }
    if (line.indent < col) break;
  }
  for (let j = anchor + 1; j < lines.length; j += 1) {
    const line = lines[j];
    if (skipped(line)) continue;
    if (line.indent < col) break;
    if (line.keyCol === col && !line.dashes.length && j !== except) keys.set(line.key, line.value);
  }
  return keys;
}

// The context of the cursor at `pos` in `text`, or null where nothing can be completed
// (inside a block scalar, a flow collection, a comment...). `kind` is "key" (a key, or a
// list item's scalar, is being typed from `from`) or "value" (the value of `key`).
// `levels[k]` are the keys of the mapping reached after `path[0..k)` (when one is).
export function cursorContext(text, pos) {
  const lines = analyzeText(text);
  const lineStart = text.lastIndexOf("\n", pos - 1) + 1;
  const lineNo = text.slice(0, lineStart).split("\n").length - 1;
  const before = text.slice(lineStart, pos);
  if (lines[lineNo]?.content && !/^\s*$/.test(before)) return null;
  const typed = analyzeLine(before);
  if (typed.comment) return null;

  let kind;
  let key = null;
  let word;
  let col;
  const rest = before.slice(typed.contentCol);
  if (typed.dashes.length && before.length === typed.dashes.at(-1) + 1) return null; // "-" without its space
  if (/^[\w.$/-]*$/.test(rest)) {
    kind = "key";
    word = rest;
    col = typed.blank ? before.length : typed.contentCol;
  } else {
    const match = /^([\w.$-]+|"[^"]*"|'[^']*')\s*:\s+([^\s#[\]{},]*)$/.exec(rest);
    if (!match) return null;
    kind = "value";
    key = unquoteKey(match[1]);
    word = match[2];
    col = typed.contentCol;
  }

  const path = [];
  const found = []; // [mapping column, anchor line, segments inside it]
  found.push([col, lineNo, 0]);
  let mode = "map";
  let column = col;
  if (typed.dashes.length) {
    for (let k = 0; k < typed.dashes.length; k += 1) path.unshift("[]");
    mode = "seq";
    column = typed.dashes[0];
  }
  for (let j = lineNo - 1; j >= 0; j -= 1) {
    const line = lines[j];
    if (skipped(line)) continue;
    if (mode === "map") {
      if (line.keyCol === column) {
        if (line.dashes.length) {
          for (let k = 0; k < line.dashes.length; k += 1) path.unshift("[]");
          mode = "seq";
          column = line.dashes[0];
        }
        continue;
      }
      if (line.indent >= column) continue;
      if (line.key !== null && isEmptyValue(line.value)) {
        path.unshift(line.key);
        found.push([line.keyCol, j, path.length]);
        column = line.keyCol;
        if (line.dashes.length) {
          for (let k = 0; k < line.dashes.length; k += 1) path.unshift("[]");
          mode = "seq";
          column = line.dashes[0];
        }
        continue;
      }
      return null;
    }
    // mode "seq": looking for what holds the list whose dashes are at `column`
    if (line.dashes.includes(column)) continue;
    if (line.indent > column) continue;
    if (line.key !== null && isEmptyValue(line.value) && (line.indent < column || !line.dashes.length)) {
      path.unshift(line.key);
      found.push([line.keyCol, j, path.length]);
      column = line.keyCol;
      mode = "map";
      if (line.dashes.length) {
        for (let k = 0; k < line.dashes.length; k += 1) path.unshift("[]");
        mode = "seq";
        column = line.dashes[0];
      }
      continue;
    }
    if (line.key === null && line.dashes.length && line.rest === "" && line.indent < column) {
      // `-` alone on its line: the list below is that item's value
      for (let k = 0; k < line.dashes.length; k += 1) path.unshift("[]");
      column = line.dashes[0];
      continue;
    }
    return null;
  }
  if (mode === "seq") return null; // a list at the top: not a flow
  const levels = new Array(path.length + 1).fill(null);
  for (const [mapCol, anchor, inner] of found) {
    // keys above and below count (a task's `type` may come after the key being typed)
    levels[path.length - inner] = mappingKeys(lines, anchor, mapCol, lineNo);
  }
  return { kind, key, word, from: pos - word.length, path, levels, indent: col };
}

function isEmptyValue(value) {
  return value === "" || /^[&!][^\s]*$/.test(value);
}
