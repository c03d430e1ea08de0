"""Pebble's syntax (Kestra's expressions) in headrace's Jinja templates.

Kestra renders `{{ }}` with Pebble. Pebble and Jinja share most of their syntax; this
module teaches Jinja's lexer and parser what Pebble has besides, at Pebble's precedence
(`io.pebbletemplates.pebble.extension.core.CoreExtension`, Kestra's `Extension`):

- `a ? b : c` (lowest precedence, nests to the right);
- `a ?? b`: `b` when `a` is undefined (at any depth: `trigger.body.x`) or null;
  `a ??? b`: `b` only when `a` is undefined. Both bind tighter than `|`, `~` and math,
  as in Pebble: `x ?? now() | date('yyyy')` formats whichever value was picked;
- `a contains b` (below comparisons), `a equals b` (as `==`), `1..3` (inclusive range);
- `{% elseif %}` as well as `{% elif %}`.

Where the same text parses to different trees in Pebble and in Jinja, the template is
refused when it is validated, with the line and the parentheses that make it mean one
thing (`a ~ b | upper`: Pebble filters the whole concatenation, Jinja only `b`).

Calls to functions headrace does not have (Kestra's `kv()`, `randomInt()`...)
are refused at validation too, each with what to do instead (`refused_calls`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.lexer import TOKEN_OPERATOR, TOKEN_STRING, Lexer, _Rule, operator_re, operators
from jinja2.parser import Parser

# Pebble's operators that Jinja's lexer does not know, longest first.
_EXTRA_OPERATORS = {
    "???": "pebble_undefined_coalesce",
    "??": "pebble_coalesce",
    "?": "pebble_ternary",
    "..": "pebble_range",
}
_OPERATOR_RE = re.compile(
    "("
    + "|".join(
        re.escape(op) for op in sorted([*operators, *_EXTRA_OPERATORS], key=lambda o: -len(o))
    )
    + ")"
)
# The environment method `a ?? b` calls (see PebbleCodeGenerator).
COALESCE = "pebble_coalesce"
_HIGH_BINARY = frozenset({"pebble_coalesce", "pebble_undefined_coalesce", "pebble_range"})

# Pebble binds `~` tighter than these (Jinja looser), and `is` looser than all of them.
_TIGHTER_IN_JINJA = (nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)
_BINARY = (nodes.Add, nodes.Sub, *_TIGHTER_IN_JINJA)

# Kestra's functions headrace refuses, and why (what to write instead).
REFUSED_FUNCTIONS = {
    "randomInt": "random values would differ on replay: pass the value as an input",
    "randomNumber": "random values would differ on replay: pass the value as an input",
    "randomPort": "headrace renders expressions in the executor, not where a port is opened",
    "uuid": "random values would differ on replay: use execution.id, or pass an input",
    "id": "random values would differ on replay: use execution.id, or pass an input",
    "ksuid": "random values would differ on replay: use execution.id, or pass an input",
    "nanoId": "random values would differ on replay: use execution.id, or pass an input",
    "fake": "random values would differ on replay: pass the value as an input",
    "fileURI": "namespace files are not in the executor: use them from a task",
    "fileSize": "the executor does not read files: use a task",
    "fileExists": "the executor does not read files: use a task",
    "fileEmpty": "the executor does not read files: use a task",
    "isFileEmpty": "the executor does not read files: use a task",
    "kv": "headrace has no KV store: use a flow variable, an input or a secret",
    "encrypt": "headrace has no encryption key in the executor: use secret()",
    "decrypt": "headrace has no encryption key in the executor: use secret()",
    "http": "the executor makes no HTTP calls: use an http.request task",
    "errorLogs": "logs are not in the executor's state: read them with `headrace logs`",
    "tasksWithState": "task states are not in expressions: use outputs or a flow trigger",
    "fromIon": "headrace has no Ion: use fromJson",
    "ionDecode": "headrace has no Ion: use fromJson",
    "fetchContext": "not available in headrace",
    "subflow": "not available in headrace: use a subflow task",
    "block": "Pebble template inheritance is not available: use a macro",
    "parent": "Pebble template inheritance is not available (parent is a variable here)",
    "isPublicHoliday": "holiday calendars are not available in headrace",
    "isLastWorkingDay": "holiday calendars are not available in headrace",
    "iterationOutput": "not available in headrace: use outputs.<task>[<value>]",
    "iterationOutputs": "not available in headrace: use outputs.<task>",
    "loopOutputs": "not available in headrace: use outputs.<task>",
    "parentOutput": "not available in headrace: use outputs.<task>",
    "lipsum": "random text of any size: unbounded, and random, so replays would differ",
    "env": "the executor's environment is not for flows: use secret() or an input",
}
REFUSED_FILTERS = {
    "yaml": "write toJson (JSON is YAML too); the yaml() function reads YAML text",
    "toIon": "headrace has no Ion: use toJson",
    "jsonEncode": "use toJson",
    "nl2br": "not available: use replace({'\\n': '<br />'})",
}
REFUSED_NAMES = {
    "envs": "headrace does not expose environment variables: use secret('NAME') or inputs",
    "globals": "headrace has no global variables: use flow variables (vars) or inputs",
    "kestra": "headrace has no `kestra` variable (environment name, URL)",
}
# Names a template may call without defining them: Jinja's own helpers.
_CALLABLE_LOCALS = frozenset({"caller", "super", "varargs", "kwargs", "loop"})


class PebbleLexer(Lexer):
    """Jinja's lexer with Pebble's `?`, `??`, `???` and `..` operators."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        for state, rules in self.rules.items():
            self.rules[state] = [
                _Rule(_OPERATOR_RE, TOKEN_OPERATOR, None) if rule.pattern is operator_re else rule
                for rule in rules
            ]

    def wrap(
        self,
        stream: Iterable[tuple[int, str, str]],
        name: str | None = None,
        filename: str | None = None,
    ) -> Iterator[Any]:
        return super().wrap(_rename_extra_operators(stream), name, filename)


def _rename_extra_operators(
    stream: Iterable[tuple[int, str, str]],
) -> Iterator[tuple[int, str, str]]:
    for lineno, token, value in stream:
        if token == TOKEN_OPERATOR and value in _EXTRA_OPERATORS:
            token = _EXTRA_OPERATORS[value]  # a token type of its own, passed through
        elif token == TOKEN_STRING and value.startswith('"') and "#{" in value:
            raise TemplateSyntaxError(
                'Pebble\'s string interpolation ("#{...}" in double quotes) is not supported: '
                "concatenate instead, e.g. 'Hello ' ~ name",
                lineno,
            )
        yield lineno, token, value


class PebbleParser(Parser):
    """Jinja's parser with Pebble's operators at Pebble's precedence."""

    def parse(self) -> nodes.Template:
        tree = super().parse()
        check_tree(tree)
        return tree

    def parse_condexpr(self) -> nodes.Expr:
        return self._ternary(super().parse_condexpr())

    def _ternary(self, condition: nodes.Expr) -> nodes.Expr:
        """`condition ? a : b` when a `?` follows (Pebble's lowest precedence)."""
        if self.stream.current.type != "pebble_ternary":
            return condition
        lineno = next(self.stream).lineno
        then = self.parse_expression()
        self.stream.expect("colon")
        otherwise = self.parse_expression()
        return nodes.CondExpr(condition, then, otherwise, lineno=lineno)

    def parse_not(self) -> nodes.Expr:
        if self.stream.current.test("name:not"):
            lineno = next(self.stream).lineno
            return nodes.Not(self.parse_not(), lineno=lineno)
        lineno = self.stream.current.lineno
        node = self.parse_compare()
        while self.stream.current.test_any("name:contains", "name:isIn"):
            operator = next(self.stream).value
            right = self.parse_compare()
            if operator == "isIn":
                node = nodes.Compare(node, [nodes.Operand("in", right)], lineno=lineno)
            else:
                node = _environment_call("pebble_contains", [node, right], lineno)
        return node

    def parse_compare(self) -> nodes.Expr:
        # Jinja's, with Pebble's `equals` as `==`.
        lineno = self.stream.current.lineno
        expr = self.parse_math1()
        ops = []
        while True:
            token = self.stream.current
            if token.type in ("eq", "ne", "lt", "lteq", "gt", "gteq"):
                next(self.stream)
                ops.append(nodes.Operand(token.type, self.parse_math1()))
            elif self.stream.skip_if("name:equals"):
                ops.append(nodes.Operand("eq", self.parse_math1()))
            elif self.stream.skip_if("name:in"):
                ops.append(nodes.Operand("in", self.parse_math1()))
            elif token.test("name:not") and self.stream.look().test("name:in"):
                self.stream.skip(2)
                ops.append(nodes.Operand("notin", self.parse_math1()))
            else:
                break
        return nodes.Compare(expr, ops, lineno=lineno) if ops else expr

    def parse_primary(self, with_namespace: bool = False) -> nodes.Expr:
        token = self.stream.current
        if token.test("name:null"):  # Pebble's null literal (Jinja's none)
            next(self.stream)
            return nodes.Const(None, lineno=token.lineno)
        parenthesized = token.type == "lparen"
        node = super().parse_primary(with_namespace)
        if parenthesized:
            node.pebble_parens = True  # type: ignore[attr-defined]  # read by check_tree
        return node

    def parse_filter_expr(self, node: nodes.Expr) -> nodes.Expr:
        # Jinja's loop over `|` and `is`, with Pebble's `??`, `???` and `..`, which bind
        # tighter than `|`: `a ?? b | f` is `(a ?? b) | f`, `a | f ?? b` is `(a | f) ?? b`.
        while True:
            token = self.stream.current
            if token.type == "pipe":
                node = self.parse_filter(node)  # type: ignore[assignment]
            elif token.type == "name" and token.value == "is":
                node = self.parse_test(node)
            elif token.type in _HIGH_BINARY:
                next(self.stream)
                node = _high_binary(token.type, node, self._parse_operand(), token.lineno)
            elif token.type == "lparen":
                node = self.parse_call(node)
            else:
                return node

    def _parse_operand(self) -> nodes.Expr:
        """The right side of `??` or `..`: a value with its `.x`, `[i]` and calls."""
        token = self.stream.current
        if token.type in ("sub", "add"):
            next(self.stream)
            operand = self._parse_operand()
            return nodes.Neg(operand) if token.type == "sub" else nodes.Pos(operand)
        return self.parse_postfix(self.parse_primary())

    def parse_if(self) -> nodes.If:
        """Jinja's `if`, where Pebble's `elseif` is also `elif`."""
        node = result = nodes.If(lineno=self.stream.expect("name:if").lineno)
        while True:
            node.test = self._ternary(self.parse_tuple(with_condexpr=False))
            node.body = self.parse_statements(
                ("name:elif", "name:elseif", "name:else", "name:endif")
            )
            node.elif_ = []
            node.else_ = []
            token = next(self.stream)
            if token.test_any("name:elif", "name:elseif"):
                node = nodes.If(lineno=self.stream.current.lineno)
                result.elif_.append(node)
                continue
            if token.test("name:else"):
                result.else_ = self.parse_statements(("name:endif",), drop_needle=True)
            break
        return result


def _high_binary(token_type: str, left: nodes.Expr, right: nodes.Expr, lineno: int) -> nodes.Expr:
    if token_type == "pebble_range":
        return _environment_call("pebble_range", [left, right], lineno)
    undefined_only = nodes.Const(token_type == "pebble_undefined_coalesce")
    return _environment_call(COALESCE, [left, right, undefined_only], lineno)


def _environment_call(name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None, lineno=lineno)


class PebbleCodeGenerator(CodeGenerator):
    """Jinja's code generator, which writes `??` with both sides as closures: the right
    side is evaluated only when needed, and an undefined left side can be caught.
    (Jinja allows no node types of its own: `??` is a call to COALESCE.)"""

    def visit_Call(self, node: nodes.Call, frame: Frame, **kwargs: Any) -> None:
        callee = node.node
        if not (isinstance(callee, nodes.EnvironmentAttribute) and callee.name == COALESCE):
            super().visit_Call(node, frame, **kwargs)
            return
        left, right, undefined_only = node.args
        frame = frame.soft()
        self.write(f"environment.{COALESCE}(lambda: ")
        self.visit(left, frame)
        self.write(", lambda: ")
        self.visit(right, frame)
        self.write(f", {bool(undefined_only.as_const())})")


# ------------------------------------------------------------ validation of the tree


def check_tree(tree: nodes.Node) -> None:
    """Refuse what Pebble and Jinja read differently, and what headrace cannot do."""
    _pebble_loop_index(tree)
    for node in _with_descendants(tree, nodes.Expr):
        reason = _ambiguity(node)
        if reason:
            raise TemplateSyntaxError(reason, node.lineno)
    _refused(tree)


def _with_descendants(tree: nodes.Node, kind: type[nodes.Node]) -> Iterator[Any]:
    """`tree` (when of `kind`) and every node of `kind` under it."""
    if isinstance(tree, kind):
        yield tree
    yield from tree.find_all(kind)


def _parenthesized(node: nodes.Node) -> bool:
    return bool(getattr(node, "pebble_parens", False))


def _is_test(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Not) and not _parenthesized(node):
        node = node.node
    return isinstance(node, nodes.Test) and not _parenthesized(node)


def _ambiguity(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Concat):
        return _concat_ambiguity(node)
    rights: list[nodes.Node] = []
    if isinstance(node, _BINARY):
        rights = [node.right]
    elif isinstance(node, nodes.Compare):
        rights = [op.expr for op in node.ops]
    if any(_is_test(right) for right in rights):
        return (
            "ambiguous `is` after an operator: Pebble (Kestra) tests the whole expression "
            "on its left, Jinja only the last operand; add parentheses, e.g. "
            "(a + b) is even or a + (b is even)"
        )
    return None


def _concat_ambiguity(node: nodes.Concat) -> str | None:
    for index, operand in enumerate(node.nodes):
        if _parenthesized(operand):
            continue
        if isinstance(operand, _TIGHTER_IN_JINJA):
            return (
                "ambiguous `~` next to `*`, `/` or `%`: Pebble (Kestra) concatenates first, "
                "Jinja computes first; add parentheses, e.g. 'n=' ~ (a * 2)"
            )
        if index and (isinstance(operand, nodes.Filter) or _is_test(operand)):
            return (
                "ambiguous filter or test after `~`: Pebble (Kestra) applies it to the whole "
                "concatenation, Jinja only to the last part; add parentheses, e.g. "
                "(a ~ b) | upper or a ~ (b | upper)"
            )
    return None


def _pebble_loop_index(tree: nodes.Node) -> None:
    """Pebble's `loop.index` counts from 0 (Jinja's `loop.index0`), `loop.revindex` too."""
    for node in _with_descendants(tree, nodes.Getattr):
        target = node.node
        is_loop = isinstance(target, nodes.Name) and target.name == "loop"
        if is_loop and node.attr in ("index", "revindex"):
            node.attr += "0"


_TEMPLATE_FILES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _refused(tree: nodes.Node) -> None:
    for node in _with_descendants(tree, _TEMPLATE_FILES):
        raise TemplateSyntaxError(
            "templates cannot include, import or extend other templates here: use a macro",
            node.lineno,
        )
    defined = _defined_names(tree)
    for filter_node in _with_descendants(tree, nodes.Filter):
        if filter_node.name in REFUSED_FILTERS:
            reason = REFUSED_FILTERS[filter_node.name]
            raise TemplateSyntaxError(
                f"filter {filter_node.name!r} is not supported: {reason}", filter_node.lineno
            )
    for name in _with_descendants(tree, nodes.Name):
        if name.ctx == "load" and name.name in REFUSED_NAMES and name.name not in defined:
            raise TemplateSyntaxError(
                f"{name.name!r} is not available: {REFUSED_NAMES[name.name]}", name.lineno
            )


def unknown_calls(tree: nodes.Node, known: Iterable[str]) -> list[tuple[str, int]]:
    """(name, line) of calls to functions that are neither global nor defined here."""
    allowed = set(known) | _defined_names(tree) | _CALLABLE_LOCALS
    return [
        (call.node.name, call.lineno)
        for call in _with_descendants(tree, nodes.Call)
        if isinstance(call.node, nodes.Name) and call.node.name not in allowed
    ]


def _defined_names(tree: nodes.Node) -> set[str]:
    names = {macro.name for macro in tree.find_all(nodes.Macro)}
    names.update(n.name for n in _with_descendants(tree, nodes.Name) if n.ctx in ("store", "param"))
    return names
