"""`read(path)` in expressions: the text of a stored file, read on the worker.

Kestra's `{{ read(outputs.t.outputFiles['out.csv']) }}` reads a file of its internal
storage while it renders. headrace renders in the executor, which has no storage and does
no I/O (its core is pure and replayed), so `read()` works as `secret()` does
(`headrace.secret_markers`): while an attempt's task properties render, `read(path)`
gives a marker `\\0read:<nonce>:<uri>\\0` holding the attempt's nonce (the same one as
its secret markers, `TaskRequest.secret_nonce`), and the worker swaps each marker for the
file's text just before the task runs (`resolve_reads`). A marker counts only with the
request's nonce, which nothing rendered into the properties can hold (see
secret_markers), so marker-like text from an input or an output stays data.

What `read()` takes: a storage URI (`headrace:///…`, such as an `outputFiles` value), a
path among the namespace's files (`sql/load.sql`, as Kestra reads namespace files), or
Kestra's `nsfile:///path`. Only files of the execution's own namespace: checked when it
renders, and again by the worker (`TaskFiles.open`). At most MAX_READ_BYTES a file and
MAX_READS_BYTES for one attempt, UTF-8 text: anything else fails the attempt naming the
file.

Where it works: only where its marker reaches a worker whole. So a flow may call it only
as a whole `{{ read(…) }}` in the properties of a task a worker runs (or in `variables`
those use); a filter, test or operator applied to it would see the marker, not the text,
and where the executor needs the value itself (`runIf`, a flowable's properties, flow
`outputs`, `checks`, triggers) there is no worker at all. Both are refused when the flow is
loaded (`read_uses`, used by `headrace.flow.read_calls`). Rendered anywhere else (a
variable renders for every context, a `runIf`'s too), `read()` gives a marker that never
resolves, as `secret()` does there.

Pure but for `resolve_reads`, which the worker runs (blocking: in a thread).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from jinja2 import TemplateSyntaxError, nodes, pass_context
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context

from headrace import secret_markers
from headrace.errors import PathError
from headrace.storage import SCHEME, StorageError, is_uri, make_uri, stored_file

FUNCTION = "read"
MARKER_PREFIX = "\x00read:"
MARKER_SUFFIX = "\x00"
# A read's text lands in a task's properties, in the worker's memory: bounded per file
# and per attempt (a SQL script or a small CSV, not a data set: give those as inputFiles).
MAX_READ_BYTES = 1024 * 1024
MAX_READS_BYTES = 4 * MAX_READ_BYTES
NAMESPACE_FILE_SCHEME = "nsfile://"
_KESTRA_SCHEME = "kestra://"
# Blocks whose output is transformed before it is output: a marker inside is not whole.
_TRANSFORMING = (nodes.FilterBlock, nodes.AssignBlock, nodes.Macro, nodes.CallBlock)

_environment: Environment | None = None


class ReadError(PathError):
    """A marker names a file the worker cannot give as text: missing, of another
    namespace, too big, or not UTF-8."""


def marker(uri: str, nonce: str) -> str:
    return f"{MARKER_PREFIX}{nonce}:{uri}{MARKER_SUFFIX}"


# ------------------------------------------------------------------ rendering (executor)


def register(environment: Environment) -> None:
    """Make `read()` a global of `environment`, whose parser `read_uses` uses."""
    global _environment
    _environment = environment
    environment.globals[FUNCTION] = _read


@pass_context
def _read(context: Context, path: Any, namespace: Any = None, version: Any = None) -> str:
    if version is not None:
        raise SecurityError(
            "read(): headrace keeps one version of each namespace file: leave out `version`"
        )
    scope = context.get(secret_markers.SCOPE_KEY)
    if scope is None:
        # Not an attempt's properties: a marker that never resolves, as secret() gives.
        # Variables render for every context, runIf's too, so this must not fail; the
        # loader refuses read() wherever such a value would be used (`read_calls`).
        return marker("", "")
    if not scope.nonce:
        raise SecurityError("read() needs the executor's secret seed (core.secret_seed)")
    own = _own_namespace(context)
    uri = storage_uri(path, own, namespace)
    scope.reads = True
    return marker(uri, scope.nonce)


def _own_namespace(context: Context) -> str:
    flow = context.get("flow")
    namespace = flow.get("namespace") if isinstance(flow, Mapping) else None
    if not isinstance(namespace, str):
        raise SecurityError("read() needs the flow's namespace (flow.namespace)")
    return namespace


def storage_uri(path: Any, own: str, namespace: Any = None) -> str:
    """The storage URI `read(path, namespace)` names, for a flow of namespace `own`:
    SecurityError saying why when it names no file this flow may read."""
    if namespace is not None and namespace != own:
        raise SecurityError(
            f"read() reads only the files of the flow's own namespace {own!r}, not of {namespace!r}"
        )
    if not isinstance(path, str) or not path.strip():
        raise SecurityError(
            f"read() takes a storage URI (headrace:///…) or a namespace file's path, not {path!r}"
        )
    if path.startswith(_KESTRA_SCHEME):
        raise SecurityError(
            f"{path!r} is a Kestra storage URI: headrace's are {SCHEME}:///…, as task"
            " outputs give them (outputFiles, uri)"
        )
    try:
        if is_uri(path):
            uri = make_uri(*stored_file(path).segments)  # canonical: one spelling per file
        else:
            uri = _namespace_file_uri(path, own)
    except StorageError as exc:
        raise SecurityError(f"read(): {exc}") from None
    file_namespace = stored_file(uri).namespace
    if file_namespace != own:
        raise SecurityError(
            f"read(): {uri} is a file of namespace {file_namespace!r}; a flow of {own!r}"
            " reads only its own namespace's files"
        )
    return uri


def _namespace_file_uri(path: str, own: str) -> str:
    """Kestra's namespace file forms: `sql/a.sql`, `/sql/a.sql`, `nsfile:///sql/a.sql`,
    `nsfile://<namespace>/sql/a.sql`."""
    # Imported here: headrace.namespace_storage reaches the flow model, which imports
    # the connectors, which import the expressions module, which imports this one.
    from headrace.namespace_storage import namespace_file_uri

    if path.startswith(NAMESPACE_FILE_SCHEME):
        host, _, rest = path[len(NAMESPACE_FILE_SCHEME) :].partition("/")
        if host and host != own:
            raise StorageError(
                f"{path!r} is a file of namespace {host!r}; a flow of {own!r} reads only"
                " its own namespace's files"
            )
        path = rest
    elif "://" in path:
        raise StorageError(
            f"{path!r}: give a storage URI ({SCHEME}:///…) or a namespace file's path"
        )
    return namespace_file_uri(own, path)


# ------------------------------------------------------------------ validation


@dataclass(frozen=True, slots=True)
class ReadUse:
    """One use of `read` in a template, or of a variable that holds one (`via`): its
    line, and whether it is output whole (`{{ read(…) }}`, `{{ vars.sql }}`), so that
    its marker reaches the worker as rendered."""

    line: int
    whole: bool
    via: str | None = None  # the variable, for a use through `vars`


def read_uses(source: str, variables: frozenset[str] = frozenset()) -> list[ReadUse]:
    """Every use of `read`, and of the flow `variables` that hold one, in the template
    `source`; [] when it does not parse (its syntax error is reported on its own)."""
    if _environment is None or not _is_template(source):
        return []
    if FUNCTION not in source and not (variables and "vars" in source):
        return []
    try:
        tree = _environment.parse(source)
    except (TemplateSyntaxError, RecursionError):
        return []
    found: list[ReadUse] = []
    _Collector(variables, found).visit(tree, transformed=False)
    return found


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


class _Collector:
    """Walks a template's tree: a use is whole when it is an `Output`'s own node and no
    block around it transforms its text (a filter block, `{% set %}`, a macro)."""

    def __init__(self, variables: frozenset[str], found: list[ReadUse]) -> None:
        self.variables = variables
        self.found = found

    def visit(self, node: nodes.Node, transformed: bool) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not self.use(child, whole=not transformed):
                    self.visit(child, transformed)
            return
        if self.use(node, whole=False):
            return
        inner = transformed or isinstance(node, _TRANSFORMING)
        for child in node.iter_child_nodes():
            self.visit(child, inner)

    def use(self, node: nodes.Node, whole: bool) -> bool:
        """Record `node` if it is a use; whether it was."""
        if _is_read_call(node):
            assert isinstance(node, nodes.Call)
            self.found.append(ReadUse(node.lineno, whole))
            for argument in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if argument is not None:  # a read in a read's arguments is never whole
                    self.visit(argument, transformed=True)
            return True
        if isinstance(node, nodes.Name) and node.name == FUNCTION:
            self.found.append(ReadUse(node.lineno, whole=False))
            return True
        if not self.variables:
            return False
        variable = _variable_of(node)
        if variable is not None and variable in self.variables:
            self.found.append(ReadUse(node.lineno, whole, via=variable))
            return True
        if variable is None and isinstance(node, nodes.Name) and node.name == "vars":
            # `vars` whole, or by a computed key: it may be one that holds a read.
            self.found.append(ReadUse(node.lineno, whole=False, via="vars"))
            return True
        return variable is not None  # another variable: nothing to see inside


def _variable_of(node: nodes.Node) -> str | None:
    """`x` for `vars.x` or `vars['x']`; None for anything else."""
    if not isinstance(node, nodes.Getattr | nodes.Getitem):
        return None
    target = node.node
    if not (isinstance(target, nodes.Name) and target.name == "vars"):
        return None
    if isinstance(node, nodes.Getattr):
        return node.attr
    return str(node.arg.value) if isinstance(node.arg, nodes.Const) else None


def _is_read_call(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == FUNCTION
    )


# ------------------------------------------------------------------ resolving (worker)

Opener = Callable[[str], IO[bytes]]


def has_reads(value: Any, nonce: str) -> bool:
    """Whether any string in `value` holds a read marker of `nonce`."""
    if not nonce:
        return False
    prefix = MARKER_PREFIX + nonce + ":"
    if isinstance(value, str):
        return prefix in value
    if isinstance(value, Mapping):
        return any(has_reads(item, nonce) for item in value.values())
    if isinstance(value, list | tuple):
        return any(has_reads(item, nonce) for item in value)
    return False


def resolve_reads(value: Any, open_file: Opener | None, *, nonce: str, path: str = "") -> Any:
    """`value` with this request's read markers replaced by the files' text.

    A marker counts only with `nonce` (non-empty); other marker-like text is data and
    stays. `open_file`: the task run's `TaskFiles.open` (its own namespace's files only);
    None where the worker has no storage. Each file is read once. Blocking. Raises
    `ReadError` naming the property and the file.
    """
    if not nonce:
        return value
    prefix = MARKER_PREFIX + nonce + ":"
    pattern = re.compile(re.escape(prefix) + "([^\x00]+)" + re.escape(MARKER_SUFFIX))
    reader = _Reader(open_file)

    def resolve(item: Any, where: str) -> Any:
        if isinstance(item, str):
            if prefix not in item:
                return item
            # One pass: a file's text is never scanned for markers itself.
            return pattern.sub(lambda match: reader.text(match.group(1), where), item)
        if isinstance(item, Mapping):
            return {key: resolve(sub, _join(where, key)) for key, sub in item.items()}
        if isinstance(item, list | tuple):
            return [resolve(sub, _join(where, i)) for i, sub in enumerate(item)]
        return item

    return resolve(value, path)


class _Reader:
    """The files of one attempt's markers, each read once, within MAX_READS_BYTES."""

    def __init__(self, open_file: Opener | None) -> None:
        self._open = open_file
        self._texts: dict[str, str] = {}
        self._total = 0

    def text(self, uri: str, where: str) -> str:
        if uri in self._texts:
            return self._texts[uri]
        if self._open is None:
            raise ReadError(
                where,
                f"read({uri}): no file storage is set up where this task runs (workers"
                " have one: HEADRACE_STORAGE_DIR)",
            )
        data = self._bytes(uri, where)
        self._total += len(data)
        if self._total > MAX_READS_BYTES:
            raise ReadError(
                where,
                f"read({uri}): the files read for this task are over {_mib(MAX_READS_BYTES)}"
                " in all: give large files to the task as inputFiles instead",
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReadError(
                where,
                f"read({uri}): not UTF-8 text (byte 0x{data[exc.start]:02x} at offset"
                f" {exc.start}): give a binary file to the task as inputFiles instead",
            ) from None
        self._texts[uri] = text
        return text

    def _bytes(self, uri: str, where: str) -> bytes:
        assert self._open is not None
        try:
            with self._open(uri) as file:
                data = file.read(MAX_READ_BYTES + 1)
        except StorageError as exc:
            raise ReadError(where, f"read(): {exc}") from None
        except OSError as exc:
            raise ReadError(where, f"read({uri}): {exc.strerror or exc}") from None
        if len(data) > MAX_READ_BYTES:
            raise ReadError(
                where,
                f"read({uri}): the file is over {_mib(MAX_READ_BYTES)}, the most read()"
                " gives: give it to the task as inputFiles instead",
            )
        return data


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB"
