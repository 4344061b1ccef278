"""Figures quoted in Markdown from results JSON, checked (and rewritten) against the files.

A quoted figure is written as

    <!--q FILE PATH [FORMAT]-->TEXT<!--/q-->

FILE is a JSON file under the results folder (bench/results/), PATH selects one value in it:
dot-separated keys; `name[k=v,k2=v2]` picks the one element of the list `name` whose fields equal
those values (compared as text), `name[3]` picks by index. FORMAT is a Python format spec
(default `g`), optionally preceded by a scale: `*100:.0f` (percent), `/1024:.1f` (KiB); a
boolean shows as `true`/`false`, or with FORMAT `yesno` as `yes`/`**no**`.
The HTML comments do not render, so a reader sees TEXT only; `check` says where TEXT is not the
formatted value, `rewrite` puts the formatted value in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

QUOTE = re.compile(r"<!--q (?P<file>\S+) (?P<path>\S+?)(?: (?P<fmt>\S+?))?-->(?P<text>.*?)<!--/q-->", re.DOTALL)
_SEGMENT = re.compile(r"^(?P<key>[^\[\]]*)(?:\[(?P<sel>[^\]]+)\])?$")


class QuoteError(ValueError):
    """A quote whose file, path or format cannot be resolved."""


@dataclass(frozen=True)
class Quote:
    doc: Path
    line: int
    file: str
    path: str
    fmt: str
    text: str
    start: int
    end: int


@cache
def _load(path: Path, mtime: float) -> Any:
    del mtime  # part of the cache key only
    return json.loads(path.read_text())


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise QuoteError(f"results file {path} does not exist")
    return _load(path, path.stat().st_mtime)


def _split(path: str) -> list[str]:
    """Split at dots outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _text(v: Any) -> str:
    return json.dumps(v) if isinstance(v, bool) or v is None else str(v)


def select(data: Any, path: str) -> Any:
    """The value at `path` (see the module docstring) in `data`."""
    node = data
    for seg in _split(path):
        m = _SEGMENT.match(seg)
        if m is None:
            raise QuoteError(f"bad path segment '{seg}' in '{path}'")
        if m["key"]:
            if not isinstance(node, dict) or m["key"] not in node:
                raise QuoteError(f"'{m['key']}' not found in '{path}'")
            node = node[m["key"]]
        sel = m["sel"]
        if sel is None:
            continue
        if not isinstance(node, list):
            raise QuoteError(f"'{seg}' selects from something that is not a list in '{path}'")
        if sel.lstrip("-").isdigit():
            try:
                node = node[int(sel)]
            except IndexError:
                raise QuoteError(f"index {sel} out of range in '{path}'") from None
            continue
        want = dict(kv.split("=", 1) for kv in sel.split(","))
        hits = [e for e in node if isinstance(e, dict) and all(k in e and _text(e[k]) == v for k, v in want.items())]
        if len(hits) != 1:
            raise QuoteError(f"'{seg}' matches {len(hits)} elements in '{path}' (must be exactly one)")
        node = hits[0]
    return node


def render(value: Any, fmt: str) -> str:
    """`value` formatted by FORMAT (scale prefix and format spec)."""
    scale, spec = "", fmt
    if fmt[:1] in "*/":
        scale, _, spec = fmt.partition(":")
    if isinstance(value, bool):
        if fmt == "yesno":
            return "yes" if value else "**no**"
        return "true" if value else "false"
    if not isinstance(value, int | float):
        if scale:
            raise QuoteError(f"cannot scale the non-number {value!r}")
        return format(str(value) if value is not None else "null", spec if spec and spec != "g" else "")
    v = float(value)
    if scale:
        factor = float(scale[1:])
        v = v * factor if scale[0] == "*" else v / factor
    if isinstance(value, int) and not scale and spec in ("", "g"):
        return str(value)
    try:
        return format(v, spec or "g")
    except ValueError as err:
        raise QuoteError(f"bad format '{fmt}': {err}") from None


def quotes(doc: Path) -> list[Quote]:
    text = doc.read_text()
    return [
        Quote(doc, text.count("\n", 0, m.start()) + 1, m["file"], m["path"], m["fmt"] or "g", m["text"],
              m.start("text"), m.end("text"))
        for m in QUOTE.finditer(text)
    ]


def expected(q: Quote, results: Path) -> str:
    return render(select(load_json(results / q.file), q.path), q.fmt)


def check(doc: Path, results: Path) -> list[str]:
    """One line per quote in `doc` that does not show its file's value (or cannot be resolved)."""
    problems = []
    for q in quotes(doc):
        where = f"{doc.name}:{q.line}: {q.file} {q.path}"
        try:
            want = expected(q, results)
        except QuoteError as err:
            problems.append(f"{where}: {err}")
            continue
        if q.text != want:
            problems.append(f"{where}: the text says '{q.text}', the file says '{want}'")
    return problems


def rewrite(doc: Path, results: Path) -> int:
    """Put every quote's current value into `doc`; returns how many changed."""
    text = doc.read_text()
    changed = 0
    for q in reversed(quotes(doc)):
        want = expected(q, results)
        if q.text != want:
            text = text[: q.start] + want + text[q.end :]
            changed += 1
    doc.write_text(text)
    return changed
