#!/usr/bin/env bash
# Refresh the web UI's vendored editor (CodeMirror 6 and what it imports) from the npm
# registry. The files are copied unchanged, one ES module per package; the browser maps
# the bare names (`@codemirror/state`) to them with the import map this script writes.
# Nothing is built: installing headrace needs no Node. Run it from the repository root
# after changing a version below, then commit headrace/ui/static/vendor/.
set -euo pipefail
PACKAGES=(
  "@codemirror/state@6.7.6 dist/index.js"
  "@codemirror/view@6.43.15 dist/index.js"
  "@codemirror/language@6.13.1 dist/index.js"
  "@codemirror/streamparser@6.0.0 dist/index.js"
  "@codemirror/commands@6.11.1 dist/index.js"
  "@codemirror/autocomplete@6.20.4 dist/index.js"
  "@codemirror/lint@6.9.8 dist/index.js"
  "@codemirror/search@6.7.2 dist/index.js"
  "@codemirror/lang-yaml@6.1.3 dist/index.js"
  "@codemirror/merge@6.12.2 dist/index.js"
  "@lezer/common@1.5.5 dist/index.js"
  "@lezer/highlight@1.2.5 dist/index.js"
  "@lezer/lr@1.4.12 dist/index.js"
  "@lezer/yaml@1.0.4 dist/index.js"
  "@marijn/find-cluster-break@1.0.4 src/index.js"
  "crelt@1.0.7 index.js"
  "style-mod@4.1.4 src/style-mod.js"
  "w3c-keyname@2.2.8 index.js"
)
out=headrace/ui/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out" && mkdir -p "$out"
imports=()
for entry in "${PACKAGES[@]}"; do
  spec=${entry% *} file=${entry#* }
  name=${spec%@*}
  flat=$(echo "${name#@}" | tr / -)
  (cd "$work" && npm pack --silent "$spec" > /dev/null)
  mkdir -p "$work/$flat" && tar xzf "$work"/*"$flat"-*.tgz -C "$work/$flat"
  cp "$work/$flat/package/$file" "$out/$flat.js"
  cp "$work/$flat/package/LICENSE" "$out/$flat.LICENSE" 2>/dev/null \
    || cp "$work/$flat/package/LICENSE.md" "$out/$flat.LICENSE"
  imports+=("\"$name\": \"/ui/static/vendor/$flat.js\"")
  echo "$spec" >> "$out/VERSIONS"
done
{
  echo '{"imports": {'
  (IFS=$'\n'; echo "${imports[*]}" | sed '$!s/$/,/')
  echo '}}'
} > "$out/importmap.json"
python -c "import json,sys; json.load(open('$out/importmap.json'))"
echo "vendored ${#PACKAGES[@]} packages into $out"
