"""Fingerprints of the source files a benchmark's figures depend on, to record with its results.

The working tree can change while a long benchmark runs (its worker processes import the code
afresh); `fingerprint` before and `changed` after say whether it did, and which files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fingerprint(*patterns: str) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every file matching the glob `patterns` under the repository."""
    files = sorted({p for pattern in patterns for p in REPO.glob(pattern) if p.is_file()})
    return {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}


def changed(before: dict[str, str], *patterns: str) -> list[str]:
    """The files whose fingerprint differs from `before` (added, removed or edited)."""
    after = fingerprint(*patterns)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def record(before: dict[str, str], *patterns: str) -> dict[str, object]:
    """What a result file says of its sources: one digest over `before` (the files at the start),
    how many files, and which changed during the run (empty: none)."""
    digest = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(before.items())).encode()).hexdigest()[:16]
    return {"patterns": list(patterns), "files": len(before), "sha256": digest,
            "changed_during_run": changed(before, *patterns)}
