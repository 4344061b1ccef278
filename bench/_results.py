"""What every benchmark does with its records: a JSON list at the documented path."""

from __future__ import annotations

import json
from pathlib import Path


def write_records(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {path}")
