"""Mapping expressions: attribute values computed from claims, safely.

A mapping template that starts with ``=`` is an expression (as in a spreadsheet)::

    =lower(normalize(given_name)) & "." & lower(normalize(family_name))
    =coalesce(display_name, join(" ", given_name, family_name), UN)
    =switch(country, "Other", "DE", "Germany", "FR", "France")
    =unique(lower(given_name & "." & family_name & N) & "@example.com")

The language is tiny on purpose: string and integer literals, names (claims, and
``UN``, ``UD``, ``IDP``, ``ID``), calls of the functions in :data:`FUNCTIONS`, ``&``
to concatenate, ``==`` and ``!=`` to compare, parentheses. There is no attribute
access, no indexing, no code: a hand-written parser turns the text into a tree of
closures over the functions of :mod:`idprov.provisioning.expression_functions`,
once per run (:func:`compile_expression` is cached), so evaluation costs a few
function calls per attribute.

Values are text, lists of text (multi-valued claims, ``split``), integers,
booleans, or nothing (None: a claim the user lacks). Text functions applied to a
list apply to each item. An expression whose value is empty yields no attribute.

Why not a template engine's sandbox (Jinja2's, say): it brings a language far larger
than this (attribute access, filters, loops) whose safety rests on what the sandbox
remembers to forbid, and an import every command would pay for; this one has nothing
to forbid, and its errors can say which column of the expression is wrong.

``unique(candidate, ...)`` is allowed only as the whole expression: the first
candidate the target does not hold yet is used when the user is created (and kept
afterwards). A candidate that uses ``N`` is tried with N = "" then 2, 3, … 99.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from idprov.provisioning.expression_functions import (
    FUNCTIONS,
    Evaluator,
    Function,
    Operand,
    empty,
    on_text,
    text_of,
)

UNIQUE_TRIES = 99
SPECIAL_NAMES = ("UN", "UD", "IDP", "ID")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<int>-?\d+)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|[(),&])
    )""",
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """An expression that cannot be compiled; ``column`` is 1-based within it."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (at column {column} of the expression)")
        self.reason = message
        self.column = column

    def shifted(self, by: int) -> ExpressionError:
        """The same error with its column counted from ``by`` characters earlier."""
        return ExpressionError(self.reason, self.column + by)


# ---------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            column = position + len(text[position:]) - len(text[position:].lstrip()) + 1
            raise ExpressionError(f"unexpected {text[column - 1]!r}", column)
        kind = match.lastgroup
        tokens.append(Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


@dataclass
class Node:
    """A parsed expression: ``kind`` is literal, name, call, concat or compare."""

    kind: str
    column: int
    value: Any = None
    children: tuple[Node, ...] = ()


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.at = 0

    def peek(self) -> Token:
        return self.tokens[self.at]

    def take(self, text: str | None = None) -> Token:
        token = self.tokens[self.at]
        if text is not None and token.text != text:
            found = f"{token.text!r}" if token.kind != "end" else "the end"
            raise ExpressionError(f"expected {text!r}, found {found}", token.column)
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.compare()
        if self.peek().kind != "end":
            token = self.peek()
            raise ExpressionError(f"unexpected {token.text!r}", token.column)
        return node

    def compare(self) -> Node:
        left = self.concat()
        if self.peek().text in ("==", "!="):
            op = self.take()
            return Node("compare", op.column, op.text, (left, self.concat()))
        return left

    def concat(self) -> Node:
        parts = [self.atom()]
        while self.peek().text == "&":
            self.take()
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else Node("concat", parts[0].column, None, tuple(parts))

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "str":
            body = token.text[1:-1]
            return Node("literal", token.column, re.sub(r"\\(.)", r"\1", body))
        if token.kind == "int":
            return Node("literal", token.column, int(token.text))
        if token.text == "(":
            node = self.compare()
            self.take(")")
            return node
        if token.kind == "name":
            if self.peek().text == "(":
                return self.call(token)
            return Node("name", token.column, token.text)
        found = f"{token.text!r}" if token.kind != "end" else "the end"
        raise ExpressionError(f"expected a value, found {found}", token.column)

    def call(self, name: Token) -> Node:
        self.take("(")
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.compare())
            while self.peek().text == ",":
                self.take()
                args.append(self.compare())
        self.take(")")
        return Node("call", name.column, name.text, tuple(args))


# ---------------------------------------------------------------- compiling
@dataclass(frozen=True)
class Expression:
    """A compiled expression. ``candidates`` is set for ``unique(...)``."""

    text: str
    evaluate: Evaluator
    names: frozenset[str]
    candidates: tuple[tuple[Evaluator, bool], ...] = ()
    """unique(): each candidate and whether it uses N."""

    def __call__(self, values: Mapping[str, Any]) -> Any:
        value = self.evaluate(values)
        return None if value is None or value == "" or value == [] else value

    @property
    def unique(self) -> bool:
        return bool(self.candidates)

    def unique_values(self, values: Mapping[str, Any]) -> Iterator[str]:
        """The candidates of unique(), in the order they are tried."""
        for evaluate, numbered in self.candidates:
            for n in [""] + [str(i) for i in range(2, UNIQUE_TRIES + 1)] if numbered else [""]:
                value = evaluate({**values, "N": n})
                if not empty(value):
                    yield text_of(value)


@lru_cache(maxsize=4096)
def compile_expression(text: str) -> Expression:
    """Compile ``text`` (without the leading ``=``); ExpressionError if malformed."""
    node = Parser(text).parse()
    if node.kind == "call" and node.value == "unique":
        if not node.children:
            raise ExpressionError("unique() needs at least one candidate", node.column)
        candidates = tuple((_compile(c, True), "N" in _names(c)) for c in node.children)
        names = frozenset().union(*(_names(c) for c in node.children)) - {"N"}
        return Expression(text, candidates[0][0], names, candidates)
    return Expression(text, _compile(node, False), frozenset(_names(node)))


def _names(node: Node) -> set[str]:
    found = {node.value} if node.kind == "name" else set()
    for child in node.children:
        found |= _names(child)
    return found


def _compile(node: Node, in_unique: bool) -> Evaluator:
    if node.kind == "literal":
        constant = node.value
        return lambda values: constant
    if node.kind == "name":
        return _compile_name(node, in_unique)
    if node.kind == "concat":
        return _compile_concat(node, in_unique)
    if node.kind == "compare":
        left, right = (_compile(c, in_unique) for c in node.children)
        if node.value == "==":
            return lambda values: text_of(left(values)) == text_of(right(values))
        return lambda values: text_of(left(values)) != text_of(right(values))
    return _compile_call(node, in_unique)


def _compile_name(node: Node, in_unique: bool) -> Evaluator:
    name = node.value
    if name == "N" and not in_unique:
        raise ExpressionError(
            "N (the number of a unique() try) is only allowed in unique()", node.column
        )
    if name in ("true", "false"):
        constant = name == "true"
        return lambda values: constant
    return lambda values: values.get(name)


def _operand(node: Node, evaluator: Evaluator) -> Operand:
    """(0, literal) / (1, name) / (2, evaluator): how a part is read without a call."""
    if node.kind == "literal":
        return (0, node.value)
    if node.kind == "name" and node.value not in ("N", "true", "false"):
        return (1, node.value)
    return (2, evaluator)


def _compile_concat(node: Node, in_unique: bool) -> Evaluator:
    """``a & b & …``: nothing when every part that is not a literal is empty."""
    parts = [_operand(c, _compile(c, in_unique)) for c in node.children]
    parts = [(0, text_of(p)) if kind == 0 else (kind, p) for kind, p in parts]

    def concat(values: Mapping[str, Any]) -> Any:
        out: list[str] = []
        seen = False
        for kind, part in parts:
            if kind == 0:
                out.append(part)
                continue
            value = values.get(part) if kind == 1 else part(values)
            if value is None or value == "" or value == []:
                continue
            seen = True
            out.append(value if type(value) is str else text_of(value))
        return "".join(out) if seen else None

    return concat


def _compile_call(node: Node, in_unique: bool) -> Evaluator:
    name, args = str(node.value), node.children
    if name == "unique":
        raise ExpressionError("unique() must be the whole expression", node.column)
    function = FUNCTIONS.get(name)
    if function is None:
        raise ExpressionError(
            f"unknown function {name!r} (functions: unique, {', '.join(sorted(FUNCTIONS))})",
            node.column,
        )
    _check_arity(function, name, node)
    for position in function.int_args:
        if position < len(args) and not (
            args[position].kind == "literal" and isinstance(args[position].value, int)
        ):
            raise ExpressionError(
                f"{name}: argument {position + 1} must be a whole number ({function.usage})",
                args[position].column,
            )
    compiled = [_compile(a, in_unique) for a in args]
    if function.lazy is not None:
        return function.lazy([_operand(a, c) for a, c in zip(args, compiled, strict=True)])
    if function.text is not None and all(a.kind == "literal" for a in args[1:]):
        constants = [text_of(a.value) if function.text_args else a.value for a in args[1:]]
        return _fused(function.text, args[0], compiled[0], constants)
    assert function.impl is not None
    return _bind(function.impl, args, compiled)


def _check_arity(function: Function, name: str, node: Node) -> None:
    count = len(node.children)
    too_many = function.max_args is not None and count > function.max_args
    if count < function.min_args or too_many:
        raise ExpressionError(f"{name} takes {_arity(function)}: {function.usage}", node.column)
    if name == "switch" and count % 2:
        raise ExpressionError(f"switch takes key/result pairs: {function.usage}", node.column)


def _arity(function: Function) -> str:
    if function.max_args == function.min_args:
        return f"{function.min_args} argument{'s' if function.min_args > 1 else ''}"
    if function.max_args is None:
        return f"at least {function.min_args} arguments"
    return f"{function.min_args} to {function.max_args} arguments"


def _bind(impl: Callable[..., Any], nodes: tuple[Node, ...], args: list[Evaluator]) -> Evaluator:
    """A closure calling ``impl`` on the arguments' values: unrolled, with literal
    arguments and a leading name baked in, since this runs for every user."""
    first = nodes[0].value if nodes and nodes[0].kind == "name" and nodes[0].value != "N" else None
    rest = nodes[1:]
    if first in ("true", "false"):
        first = None
    if all(n.kind == "literal" for n in rest):
        bound = _bind_constants(impl, first, args[0] if args else None, [n.value for n in rest])
        if bound is not None:
            return bound
    if len(args) == 2:
        a, b = args
        return lambda values: impl(a(values), b(values))
    if len(args) == 3:
        a, b, c = args
        return lambda values: impl(a(values), b(values), c(values))
    return lambda values: impl(*(arg(values) for arg in args))


def _fused(fn: Callable[..., Any], node: Node, arg: Evaluator, constants: list[Any]) -> Evaluator:
    """A text function whose other arguments are literals, in one closure: text goes
    straight to ``fn``; lists and nothing take :func:`on_text`. Unrolled by where the
    value comes from (a name, or another evaluator) and by the number of literals,
    since this runs for every user."""
    kind, part = _operand(node, arg)
    if kind == 0:  # a literal: the result is a constant too
        result = _apply(fn, part, constants)
        return lambda values: result
    read: Evaluator = (lambda values: values.get(part)) if kind == 1 else arg
    if kind == 1 and not constants:

        def name_only(values: Mapping[str, Any]) -> Any:
            value = values.get(part)
            return fn(value) if type(value) is str else on_text(fn, value)

        return name_only
    if not constants:

        def value_only(values: Mapping[str, Any]) -> Any:
            value = read(values)
            return fn(value) if type(value) is str else on_text(fn, value)

        return value_only
    if len(constants) == 1:
        (b,) = constants

        def one_literal(values: Mapping[str, Any]) -> Any:
            value = values.get(part) if kind == 1 else read(values)
            return fn(value, b) if type(value) is str else on_text(fn, value, b)

        return one_literal
    b, c = constants[0], constants[1]

    def two_literals(values: Mapping[str, Any]) -> Any:
        value = values.get(part) if kind == 1 else read(values)
        return fn(value, b, c) if type(value) is str else on_text(fn, value, b, c)

    return two_literals


def _apply(fn: Callable[..., Any], value: Any, constants: list[Any]) -> Any:
    return fn(value, *constants) if type(value) is str else on_text(fn, value, *constants)


def _bind_constants(
    impl: Callable[..., Any], name: str | None, a: Evaluator | None, constants: list[Any]
) -> Evaluator | None:
    """``impl(first, *constants)``: the first argument a name or an evaluator."""
    if name is not None:
        if not constants:
            return lambda values: impl(values.get(name))
        if len(constants) == 1:
            (b,) = constants
            return lambda values: impl(values.get(name), b)
        return lambda values: impl(values.get(name), *constants)
    if a is None:
        return None
    if not constants:
        return lambda values: impl(a(values))
    if len(constants) == 1:
        (b,) = constants
        return lambda values: impl(a(values), b)
    return lambda values: impl(a(values), *constants)


def check_names(expression: Expression, known: Iterable[str]) -> None:
    """ExpressionError naming a name that is neither a claim nor UN/UD/IDP/ID."""
    allowed = {*known, *SPECIAL_NAMES, "true", "false"}
    for name in sorted(expression.names):
        if name not in allowed:
            column = expression.text.find(name) + 1
            raise ExpressionError(
                f"unknown name {name!r} (claims, or UN, UD, IDP, ID; text goes in quotes)",
                column,
            )
