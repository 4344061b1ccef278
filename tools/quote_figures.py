#!/usr/bin/env python3
"""Check (or, with --write, update) the figures README.md and docs/ quote from bench/results/*.json.

    tools/run.sh python tools/quote_figures.py [--write] [FILE.md ...]

Syntax of a quote: safe_ctrl_ros/evaluation/quotes.py. Exit 1 when a quote differs from its file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safe_ctrl_ros.evaluation.quotes import check, quotes, rewrite

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", type=Path, nargs="*")
    parser.add_argument("--write", action="store_true", help="rewrite each quote with its file's value")
    args = parser.parse_args()
    docs = args.docs or documents()
    bad = 0
    for doc in docs:
        if args.write:
            n = rewrite(doc, RESULTS)
            print(f"{doc}: {len(quotes(doc))} quotes, {n} updated")
        for problem in check(doc, RESULTS):
            print(problem, file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
