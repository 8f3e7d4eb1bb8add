"""Reading domain spec files: untrusted bytes in, plain YAML documents out, or one line saying why not.

`pool apply -f` hands whatever it read to :func:`load_yaml_documents` before any spec is validated.
The bytes are bounded (:data:`MAX_BYTES`), decoded strictly as UTF-8 and parsed with a safe loader
that refuses duplicate keys. Nesting, aliases and the number of values once aliases are expanded are
counted from the parser's events *before* any Python object is built, so an alias bomb is refused
for the cost of reading its text. Every failure is a :class:`pool.core.model.SpecError` whose message is
one line starting with the source's name.

Imports only the standard library, ``yaml`` and :mod:`pool.core.model`.
"""

from __future__ import annotations

import codecs
from typing import Any

import yaml

from pool.core.model import SHOW_MAX, SpecError, clean_text, show_value

MAX_BYTES = 1 << 20  # a spec is a few KB; 1 MiB is generous
MAX_DEPTH = 32  # nested mappings and lists, aliases expanded
MAX_NODES = 100_000  # scalars, mappings and lists, aliases expanded
MAX_ALIASES = 1_000

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: the same YAML, faster
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SpecLoader(_Base):  # type: ignore[misc]
    """A safe loader that refuses a key given twice in one mapping (YAML says keys are unique)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: dict[int, yaml.Node] = {}  # the nodes themselves are kept: their ids stay unique

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # called on every mapping (and on each merged one) before its pairs are touched: the
        # explicit keys are checked as written, merged keys (`<<`) may be overridden
        if id(node) not in self._checked:
            self._checked[id(node)] = node
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the constructor refuses it with its own message
                    continue
                if first is not None:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first.start_mark.line + 1)
                seen[key] = key_node
        super().flatten_mapping(node)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


def _line(event: yaml.Event) -> int:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


def _check_events(text: str, source: str) -> None:
    """Refuse deep nesting, too many aliases and alias bombs from the event stream alone.

    Each event adds the number of values it stands for to a running count: one for a scalar or the
    start of a mapping or list, the (memoised) expanded size of its anchor for an alias. The
    expanded size of an anchored node is the count after its end minus the count at its start; its
    height is kept the same way, so an alias nested in deep data counts its own depth too.
    """
    count = 0
    aliases = 0
    stack: list[list[Any]] = []  # per open mapping/list: [anchor, count at start, height of children]
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height)
    open_anchors: set[str] = set()

    def finished(anchor: str | None, size: int, height: int) -> None:
        if anchor is not None:
            sizes[anchor] = (size, height)
        if stack:
            stack[-1][2] = max(stack[-1][2], height)

    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()  # anchors belong to their document
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise SpecError(f"{source}: more than {MAX_ALIASES} aliases (line {_line(event)})")
            anchor = event.anchor
            if anchor in open_anchors:
                raise SpecError(f"{source}: alias *{clean_text(str(anchor), SHOW_MAX)} at line {_line(event)} "
                                "is inside the node it names; a spec cannot contain itself")
            if anchor not in sizes:
                raise SpecError(f"{source}: alias *{clean_text(str(anchor), SHOW_MAX)} at line {_line(event)} "
                                "names no anchor defined before it")
            size, height = sizes[anchor]
            count += size
            if len(stack) + height > MAX_DEPTH:
                raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels once the alias at line "
                                f"{_line(event)} is expanded")
            finished(None, size, height)
        elif isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            count += 1
            if isinstance(event, yaml.ScalarEvent):
                finished(event.anchor, 1, 0)
            else:
                stack.append([event.anchor, count - 1, 0])
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                if len(stack) > MAX_DEPTH:
                    raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels (line {_line(event)})")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, start, child_height = stack.pop()
            if anchor is not None:
                open_anchors.discard(anchor)
            finished(anchor, count - start, child_height + 1)
        if count > MAX_NODES:
            raise SpecError(f"{source}: more than {MAX_NODES} values once aliases are expanded (line "
                            f"{_line(event)}); a spec is small, and aliases may not multiply it")


def load_yaml_documents(data: bytes, *, source: str) -> list[Any]:
    """The YAML documents in ``data`` as plain Python values (``None`` for an empty one).

    Raises :class:`SpecError` with one line starting with ``source`` when ``data`` is larger than
    :data:`MAX_BYTES`, is not UTF-8, is not YAML, gives a key twice in one mapping, nests deeper than
    :data:`MAX_DEPTH`, has more than :data:`MAX_ALIASES` aliases, or more than :data:`MAX_NODES`
    values once its aliases are expanded.
    """
    source = clean_text(source, 120)
    if len(data) > MAX_BYTES:
        raise SpecError(f"{source}: larger than {MAX_BYTES} bytes (1 MiB); a domain spec is a few KB")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
                        f"({exc.reason})") from None
    try:
        _check_events(text, source)
        loader = _SpecLoader(text)
        try:
            docs = []
            while loader.check_data():
                docs.append(loader.get_data())
            return docs
        finally:
            loader.dispose()
    except SpecError:
        raise
    except _DuplicateKey as dup:
        raise SpecError(f"{source}: duplicate key {show_value(dup.key)} at line {dup.line} (first "
                        f"at line {dup.first}); give each key once") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "unexpected text"
        raise SpecError(f"{source}: not valid YAML{where}: {clean_text(str(problem), 200)}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {clean_text(str(exc), 200)}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to read") from None
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        # a scalar its tag cannot hold, where PyYAML's constructors fail with a plain exception: an
        # int of 5,000 digits, a date of month 13, `!!float ''`, `!!bool x`, `!!timestamp abc`
        detail = clean_text(str(exc), 200) if isinstance(exc, ValueError) else type(exc).__name__
        raise SpecError(f"{source}: not valid YAML: a value cannot be read as its type ({detail})") from None
