// One namespace (`/ui/namespaces/{namespace}`): its flows and its files. The files
// browser lists a folder, opens sub-folders, uploads files into the folder shown,
// downloads, previews small text files and deletes (what `headrace namespace files` does).

import { api, authorization } from "../api.js";
import { clear, errorBox, formatDate, h, saveBlob, toast } from "../dom.js";

const PREVIEW_BYTES = 256 * 1024;

export async function render(main, { namespace }, { setTitle, query, navigate }) {
  setTitle(namespace);
  const filesUrl = `/api/v1/namespaces/${encodeURIComponent(namespace)}/files`;
  const folder = normalise(query.get("path") || "/");
  const flowsBox = h("div", {});
  const filesBox = h("div", {});
  main.append(
    h("p", {}, h("a", { href: "/ui/namespaces" }, "← All namespaces")),
    h("div", { class: "page-head" }, h("h1", {}, namespace), h("span", { class: "spacer" }), h("a", { class: "button primary", href: `/ui/flows/new?namespace=${encodeURIComponent(namespace)}` }, "New flow here")),
    h("section", { "aria-labelledby": "ns-flows" }, h("h2", { id: "ns-flows" }, "Flows"), flowsBox),
    h("section", { "aria-labelledby": "ns-files" }, h("h2", { id: "ns-files" }, "Files"), filesBox),
  );

  const flows = (await api("flows", { query: { namespace } })).results.filter((f) => f.namespace === namespace);
  clear(
    flowsBox,
    flows.length
      ? h("ul", { class: "plain-list" }, flows.map((f) => h("li", {}, h("a", { href: `/ui/flows/${encodeURIComponent(namespace)}/${encodeURIComponent(f.id)}` }, f.id), h("span", { class: "muted" }, ` revision ${f.revision}`))))
      : h("p", { class: "muted" }, "No flow in this namespace."),
  );

  const goTo = (path) => navigate(`/ui/namespaces/${encodeURIComponent(namespace)}?path=${encodeURIComponent(path)}`);
  try {
    const entries = await api(`${filesUrl}/directory`, { query: { path: folder } });
    clear(filesBox, breadcrumbs(folder, goTo), uploadForm(filesUrl, folder, goTo), filesTable(entries, folder, filesUrl, goTo));
  } catch (error) {
    clear(filesBox, breadcrumbs(folder, goTo), error.status === 404 ? h("p", { class: "muted" }, "This folder is empty.") : errorBox(error), uploadForm(filesUrl, folder, goTo));
  }
}

function normalise(path) {
  const parts = path.split("/").filter((p) => p && p !== ".");
  return `/${parts.join("/")}`;
}

function join(folder, name) {
  return normalise(`${folder}/${name}`);
}

function breadcrumbs(folder, goTo) {
  const parts = folder.split("/").filter(Boolean);
  const crumbs = [h("button", { class: "link", onclick: () => goTo("/") }, "root")];
  parts.forEach((part, i) => {
    crumbs.push(" / ", h("button", { class: "link", onclick: () => goTo(`/${parts.slice(0, i + 1).join("/")}`) }, part));
  });
  return h("nav", { class: "crumbs", "aria-label": "Folder" }, crumbs);
}

// Files, or a whole folder with its sub-folders (what `headrace namespace files upload
// DIR --to FOLDER` does), into the folder typed (the one shown by default).
function uploadForm(filesUrl, folder, done) {
  const into = h("input", { id: "upload-into", type: "text", value: folder, spellcheck: "false" });
  const files = h("input", { id: "upload-files", type: "file", multiple: true });
  const tree = h("input", { id: "upload-folder", type: "file", webkitdirectory: true });
  const progress = h("span", { class: "muted", role: "status" });
  const form = h(
    "form",
    { class: "filters" },
    h("div", { class: "field" }, h("label", { for: "upload-into" }, "Into folder"), into),
    h("div", { class: "field" }, h("label", { for: "upload-files" }, "Files to upload"), files),
    h("div", { class: "field" }, h("label", { for: "upload-folder" }, "Or a whole folder"), tree),
    h("button", { type: "submit" }, "Upload"),
    progress,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...files.files, ...tree.files];
    if (!chosen.length) return toast("Choose files or a folder first.");
    const target = normalise(into.value || "/");
    try {
      for (const [index, file] of chosen.entries()) {
        progress.textContent = `Uploading ${index + 1} of ${chosen.length}…`;
        // A folder's files keep their path below it (webkitRelativePath: "dbt/models/a.sql").
        const path = join(target, file.webkitRelativePath || file.name);
        await api(filesUrl, { method: "POST", query: { path }, body: file });
      }
      toast(`Uploaded ${chosen.length} file(s) into ${target}`);
      done(target);
    } catch (error) {
      progress.textContent = "";
      toast(`Upload failed: ${error.message}`, "error");
    }
  });
  return form;
}

function filesTable(entries, folder, filesUrl, goTo) {
  if (!entries.length) return h("p", { class: "muted" }, "This folder is empty.");
  const sorted = [...entries].sort((a, b) => (a.type === b.type ? a.fileName.localeCompare(b.fileName) : a.type === "Directory" ? -1 : 1));
  const preview = h("div", {});
  const rows = sorted.map((entry) => {
    const path = join(folder, entry.fileName);
    const isDir = entry.type === "Directory";
    return h(
      "tr",
      {},
      h("td", {}, isDir ? h("button", { class: "link", onclick: () => goTo(path) }, `${entry.fileName}/`) : entry.fileName),
      h("td", { class: "num" }, isDir ? "" : size(entry.size)),
      h("td", {}, entry.lastModifiedTime ? formatDate(entry.lastModifiedTime) : ""),
      h(
        "td",
        {},
        h(
          "div",
          { class: "row" },
          isDir ? null : h("button", { onclick: () => showPreview(preview, filesUrl, path, entry.size), "aria-label": `View ${entry.fileName}` }, "View"),
          isDir ? null : h("button", { onclick: () => download(filesUrl, path, entry.fileName), "aria-label": `Download ${entry.fileName}` }, "Download"),
          h("button", { class: "danger", onclick: () => remove(filesUrl, path, isDir, () => goTo(folder)), "aria-label": `Delete ${entry.fileName}` }, "Delete"),
        ),
      ),
    );
  });
  return h(
    "div",
    {},
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Size"), h("th", {}, "Modified"), h("th", {}, h("span", { class: "visually-hidden" }, "Actions")))), h("tbody", {}, rows)),
    preview,
  );
}

function size(bytes) {
  if (bytes === undefined || bytes === null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function fetchFile(filesUrl, path) {
  const response = await fetch(`${filesUrl}?path=${encodeURIComponent(path)}`, { headers: { Authorization: authorization() || "" } });
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).message || response.statusText);
  return response.blob();
}

async function showPreview(box, filesUrl, path, bytes) {
  if (bytes > PREVIEW_BYTES) return toast("Too large to view here: download it.");
  try {
    const text = await (await fetchFile(filesUrl, path)).text();
    clear(box, h("h3", { tabindex: "-1" }, path), h("pre", { class: "code" }, text));
    box.firstChild.focus({ preventScroll: true });
    box.scrollIntoView({ block: "nearest" });
  } catch (error) {
    toast(`Cannot open ${path}: ${error.message}`, "error");
  }
}

async function download(filesUrl, path, name) {
  try {
    saveBlob(await fetchFile(filesUrl, path), name);
  } catch (error) {
    toast(`Download failed: ${error.message}`, "error");
  }
}

async function remove(filesUrl, path, isDir, done) {
  if (!confirm(isDir ? `Delete the folder ${path} and everything in it?` : `Delete ${path}?`)) return;
  try {
    await api(filesUrl, { method: "DELETE", query: { path } });
    toast(`Deleted ${path}`);
    done();
  } catch (error) {
    toast(`Delete failed: ${error.message}`, "error");
  }
}
