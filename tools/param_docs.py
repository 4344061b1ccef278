"""Generate the parameter tables of docs/ARCHITECTURE.md from the node specs, or check them.

Each table sits between `<!-- BEGIN params:NODE -->` and `<!-- END params:NODE -->`. Without
--write the tool checks and exits 1 when a table differs from its spec (test/test_parameter_spec.py
runs the same check).

    tools/run.sh python tools/param_docs.py [--write] [FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from safe_ctrl_ros.parameters.registry import NODE_SPECS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
BLOCK = re.compile(r"(<!-- BEGIN params:(?P<node>[a-z_]+) -->\n)(?P<body>.*?)(<!-- END params:(?P=node) -->)", re.S)


def render(text: str) -> str:
    """`text` with every marked table regenerated; KeyError for a marker naming no node spec."""

    def table(m: re.Match[str]) -> str:
        return m.group(1) + NODE_SPECS[m.group("node")].markdown() + m.group(4)

    return BLOCK.sub(table, text)


def marked_nodes(text: str) -> list[str]:
    return [m.group("node") for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables in place")
    parser.add_argument("file", nargs="?", type=Path, default=DOC)
    opts = parser.parse_args(argv)
    text = opts.file.read_text()
    missing = sorted(set(NODE_SPECS) - set(marked_nodes(text)))
    if missing:
        print(f"{opts.file}: no table for node(s) {missing}", file=sys.stderr)
        return 1
    new = render(text)
    if opts.write:
        opts.file.write_text(new)
        return 0
    if new != text:
        print(f"{opts.file}: parameter tables differ from the specs; run tools/param_docs.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
