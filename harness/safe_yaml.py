"""Safe reading of the project's YAML files (suites and general sets).

The loader refuses duplicate keys, alias bombs, deep nesting and files that are too big, and
reads `1e-4` as a number and `yes`/`no` as strings (YAML 1.2 scalars). Every problem becomes a
SuiteError naming the file, the line and what to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import SuiteError, shown

MAX_YAML_BYTES = 1 << 20        # a suite or a general set is a small file
MAX_YAML_DEPTH = 100            # nesting levels, after alias expansion too
MAX_YAML_NODES = 1_000_000      # values after alias expansion (a "billion laughs" file has 10^9)
MAX_YAML_CHARS = 16 << 20       # characters of text after alias expansion
_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"


class SafeYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no Python objects) that refuses duplicate keys and nesting deeper than
    MAX_YAML_DEPTH while composing, and reads scalars as YAML 1.2 does where YAML 1.1 surprises:
    `1e-4` is a number (1.1: a string) and only true/false are booleans (1.1: yes/no/on/off too)."""

    def compose_node(self, parent, index):
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1


_INT_TAG = "tag:yaml.org,2002:int"
SafeYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SafeYamlLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# PyYAML's int and float forms without base 60 (1.1 reads 10:30 as 630), and exponents without a dot.
SafeYamlLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
SafeYamlLoader.add_implicit_resolver(
    _FLOAT_TAG, re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?"
                           r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789"))


def _construct_mapping(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: the base constructor reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)} (first at line {first.line + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


SafeYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader = SafeYamlLoader   # the old name


def _check_expansion(root) -> None:
    """Refuse a document whose aliases expand to a huge (or recursive, or too deep) structure before
    anything constructs or walks it. Shared nodes are measured once, in O(distinct nodes)."""
    memo: dict[int, tuple[int, int, int]] = {}        # node -> (values, characters, height) expanded

    def too_deep(node):
        return yaml.composer.ComposerError(None, None, f"aliases nest deeper than {MAX_YAML_DEPTH} levels",
                                           node.start_mark)

    def size(node, depth: int, active: set) -> tuple[int, int, int]:
        key = id(node)
        if key in memo:
            if depth + memo[key][2] - 1 > MAX_YAML_DEPTH:
                raise too_deep(node)
            return memo[key]
        if key in active:
            raise yaml.composer.ComposerError(None, None, "an alias refers to the collection that contains it "
                                              "(a recursive structure)", node.start_mark)
        if depth > MAX_YAML_DEPTH:
            raise too_deep(node)
        if isinstance(node, yaml.ScalarNode):
            result = (1, len(node.value), 1)
        else:
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            nodes, chars, height = 1, 0, 1
            for child in children:
                n, c, h = size(child, depth + 1, active)
                nodes, chars, height = nodes + n, chars + c, max(height, h + 1)
                if nodes > MAX_YAML_NODES or chars > MAX_YAML_CHARS:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand this to more than {MAX_YAML_NODES:,} values or "
                                    f"{MAX_YAML_CHARS >> 20} MiB of text (an alias bomb?)", node.start_mark)
            active.discard(key)
            result = (nodes, chars, height)
        memo[key] = result
        return result

    size(root, 1, set())


_YAML_FIXES = (
    ("duplicate key", "keep one of them"),
    ("nesting deeper", "flatten the structure"),
    ("aliases nest", "remove the nested aliases (*name)"),
    ("aliases expand", "remove the nested aliases (*name)"),
    ("recursive", "remove the alias (*name) inside its own anchor (&name)"),
    ("cannot start any token", "indent with spaces, not tabs, and quote values that start with @ or `"),
    ("mapping values are not allowed", "quote the value if it contains ': ', or fix the indentation"),
    ("could not determine a constructor", "remove the tag: only plain YAML is read (no !!python/... objects)"),
    ("undefined alias", "define the anchor (&name) before using *name, or quote a value that starts with *"),
    ("unhashable", "use plain text as keys"),
)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """One line: where (line, column), what is wrong, what to do."""
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return (f"line {line}, column {column}: invalid YAML: control character U+{code:04X} is not allowed; "
                f"remove it (inside a double-quoted string, write it as \\u{code:04X})")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark and (not mark or context_mark.line != mark.line):
        problem += f" ({context} at line {context_mark.line + 1})"
    fix = next((f for key, f in _YAML_FIXES if key in problem),
               "check the brackets, quotes and indentation there")
    return f"{where}invalid YAML: {problem}; {fix}"


def parse_yaml(text: str, path: Path | str) -> Any:
    """The one document in `text`, safely; SuiteError(path, [problem]) otherwise."""
    loader = None
    try:
        loader = SafeYamlLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SuiteError(path, [_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise SuiteError(path, ["invalid YAML: nesting too deep; flatten the structure"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path, what: str = "suite") -> Any:
    """Read a small YAML file (a suite, a general set): UTF-8, safe, bounded, one problem per line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SuiteError(path, [f"{size:,} bytes, more than a {what} file should be ({MAX_YAML_BYTES:,}); "
                                    f"check that this is the {what} YAML file"])
        raw = path.read_bytes()
    except IsADirectoryError:
        raise SuiteError(path, [f"is a directory; give the {what} YAML file"]) from None
    except FileNotFoundError:
        raise SuiteError(path, [f"{what} file not found; check the path"]) from None
    except OSError as exc:
        raise SuiteError(path, [f"cannot read the {what} file ({exc.strerror}); check its permissions"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise SuiteError(path, [f"line {line}, column {column}: byte 0x{raw[exc.start]:02x} is not UTF-8; "
                                f"save the file as UTF-8"]) from None
    return parse_yaml(text.removeprefix("\ufeff"), path)
