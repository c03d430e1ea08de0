// Completion of flow YAML from the flow JSON Schema (draft-07, `GET /api/v1/flows/schema`):
// given where the cursor is (yaml_context.js), the keys valid there or the values a key
// takes, each with the schema's description.
//
// A task's keys depend on its `type`: the schema says so with `allOf` entries of
// `if: {properties: {type: {enum: [...]}}}, then: {$ref: task.<type>}`. Such conditions
// are evaluated against the keys already written in the mapping; other combinators
// (anyOf, oneOf, allOf) are merged, which for completion means "offer the union".

const KESTRA_PREFIX = "io.kestra.";

export class SchemaCompleter {
  constructor(schema) {
    this.root = schema;
    this.definitions = schema.definitions || schema.$defs || {};
  }

  deref(node, depth = 0) {
    while (node && typeof node === "object" && node.$ref && depth < 50) {
      const name = decodeURIComponent(node.$ref.replace(/^#\/(definitions|\$defs)\//, "")).replaceAll("~1", "/").replaceAll("~0", "~");
      node = this.definitions[name];
      depth += 1;
    }
    return node && typeof node === "object" ? node : null;
  }

  // `nodes` with their combinators expanded, given the mapping's keys (a Map).
  expand(nodes, keys = new Map()) {
    const out = [];
    const seen = new Set();
    const visit = (raw) => {
      const node = this.deref(raw);
      if (!node || seen.has(node)) return;
      seen.add(node);
      out.push(node);
      for (const sub of [...(node.allOf || []), ...(node.anyOf || []), ...(node.oneOf || [])]) visit(sub);
      if (node.if) {
        if (this.matches(node.if, keys)) visit(node.then);
        else visit(node.else);
      }
    };
    nodes.forEach(visit);
    return out;
  }

  // Whether the mapping's keys satisfy an `if` (its `required` and its properties'
  // enum/const, the only conditions the flow schema uses).
  matches(condition, keys) {
    const node = this.deref(condition);
    if (!node) return false;
    for (const name of node.required || []) if (!keys.has(name)) return false;
    for (const [name, rule] of Object.entries(node.properties || {})) {
      if (!keys.has(name)) continue;
      const value = scalar(keys.get(name));
      const allowed = this.deref(rule);
      if (allowed?.enum && !allowed.enum.includes(value)) return false;
      if (allowed && "const" in allowed && allowed.const !== value) return false;
    }
    return true;
  }

  // The schemas of the value at `path` (keys and "[]"), `levels[k]` being the keys of the
  // mapping reached after k segments.
  resolve(path, levels) {
    let raw = [this.root];
    for (let k = 0; k < path.length; k += 1) {
      const facets = this.expand(raw, levels[k] || new Map());
      raw = path[k] === "[]" ? this.items(facets) : this.child(facets, path[k]);
      if (!raw.length) return [];
    }
    return this.expand(raw, levels[path.length] || new Map());
  }

  items(facets) {
    return facets.map((f) => f.items).filter((i) => i && typeof i === "object" && !Array.isArray(i));
  }

  child(facets, key) {
    const named = facets.map((f) => f.properties?.[key]).filter(Boolean);
    if (named.length) return named;
    return facets.map((f) => f.additionalProperties).filter((a) => a && typeof a === "object");
  }

  // The keys a mapping of `facets` takes: [{name, schemas, description, required}].
  properties(facets) {
    const found = new Map();
    const required = new Set(facets.flatMap((f) => f.required || []));
    for (const facet of facets) {
      for (const [name, schema] of Object.entries(facet.properties || {})) {
        const entry = found.get(name) || { name, schemas: [], description: null, required: required.has(name) };
        entry.schemas.push(schema);
        entry.description ||= this.describe(schema);
        found.set(name, entry);
      }
    }
    return [...found.values()];
  }

  describe(schema) {
    const node = this.deref(schema);
    if (!node) return null;
    if (node.description) return node.description;
    for (const sub of [...(node.allOf || []), ...(node.anyOf || [])]) {
      const text = this.describe(sub);
      if (text) return text;
    }
    return null;
  }

  // "string", "array", "object", "boolean"... of a property (null left out).
  kinds(schemas) {
    const kinds = new Set();
    for (const node of this.expand(schemas)) {
      for (const type of [node.type].flat()) if (type && type !== "null") kinds.add(type);
      if (node.properties) kinds.add("object");
      if (node.enum) kinds.add("enum");
    }
    return kinds;
  }

  // The fixed values a key takes: enum values, const, booleans.
  values(schemas) {
    const values = new Map();
    for (const node of this.expand(schemas)) {
      for (const value of node.enum || []) if (value !== null) values.set(String(value), value);
      if ("const" in node && node.const !== null) values.set(String(node.const), node.const);
      if ([node.type].flat().includes("boolean")) {
        values.set("true", true);
        values.set("false", false);
      }
    }
    return [...values.keys()];
  }

  // What the value `value` of `key` means in a mapping of `facets`: the description of
  // the `then` its `if` selects (a task type's summary), if any.
  describeValue(facets, key, value) {
    for (const facet of facets) {
      for (const sub of facet.allOf || []) {
        const condition = this.deref(sub.if);
        const rule = condition && this.deref(condition.properties?.[key]);
        if (rule?.enum?.includes(value) || (rule && rule.const === value)) {
          const text = this.describe(sub.then);
          if (text) return text;
        }
      }
    }
    return null;
  }

  // Completions for a cursor context (yaml_context.js): [{label, detail, info, apply, boost}].
  complete(context) {
    if (context.kind === "value") {
      const facets = this.resolve(context.path, context.levels);
      const schemas = this.child(facets, context.key);
      return this.values(schemas).map((value) => this.valueOption(facets, context.key, value));
    }
    const facets = this.resolve(context.path, context.levels);
    const present = context.levels[context.path.length] || new Map();
    const keys = this.properties(facets).filter((p) => !present.has(p.name));
    if (keys.length) return keys.map((p) => this.keyOption(p, context.indent));
    // a list of scalars (`states: [SUCCESS]` written as items): offer its values
    return this.values(facets).map((value) => ({ label: value, type: "enum" }));
  }

  valueOption(facets, key, value) {
    const kestra = value.startsWith(KESTRA_PREFIX);
    return {
      label: value,
      type: "enum",
      detail: kestra ? "Kestra's name" : undefined,
      info: this.describeValue(facets, key, value) || undefined,
      boost: kestra ? -10 : 0,
    };
  }

  keyOption(property, indent) {
    const kinds = this.kinds(property.schemas);
    const kestraOnly = /^Kestra's[;:]? (older name|ignored|must)/.test(property.description || "") || /ignored, with a warning|ignored with a warning/.test(property.description || "");
    const detail = [kindLabel(kinds), property.required ? "required" : null, kestraOnly ? "Kestra's" : null].filter(Boolean).join(" · ");
    return {
      label: property.name,
      type: "property",
      detail: detail || undefined,
      info: property.description || undefined,
      boost: property.required ? 5 : kestraOnly ? -20 : 0,
      apply: insertKey(property.name, kinds, indent),
    };
  }
}

function scalar(text) {
  const value = String(text ?? "").trim();
  if (/^".*"$|^'.*'$/.test(value)) return value.slice(1, -1);
  return value;
}

function kindLabel(kinds) {
  if (kinds.has("enum")) return "choice";
  const list = [...kinds].filter((k) => k !== "enum");
  return list.length === 1 ? list[0] : list.length ? list.join(" | ") : "";
}

// The text a chosen key inserts: `key: ` for a scalar, a new indented line for a mapping,
// a first `- ` item for a list.
function insertKey(name, kinds, indent) {
  const pad = " ".repeat(indent);
  const only = [...kinds].filter((k) => k !== "enum");
  if (only.length === 1 && only[0] === "array") return `${name}:\n${pad}  - `;
  if (only.length === 1 && only[0] === "object") return `${name}:\n${pad}  `;
  return `${name}: `;
}
