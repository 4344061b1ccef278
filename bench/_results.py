"""What every benchmark does with its records: one JSON object at the documented path.

    {"provenance": {commit, dirty, date, command, machine, versions}, <top-level keys>, "records": [...]}

`provenance` says what produced the file (safe_ctrl_ros.evaluation.provenance); benchmarks add their
own top-level keys (a `rule`, `summaries`, ...) before the records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safe_ctrl_ros.evaluation.provenance import provenance
from safe_ctrl_ros.json_out import dumps


def write_records(path: Path, records: list[dict[str, Any]], **top: Any) -> None:
    """Write `records` with this run's provenance and the extra top-level keys `top` to `path`."""
    if "records" in top or "provenance" in top:
        raise ValueError("write_records: 'records' and 'provenance' are written by write_records itself")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps({"provenance": provenance(), **top, "records": records}))  # nan is written as null
    print(f"wrote {path}")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a result file written by write_records."""
    data = json.loads(path.read_text())
    records: list[dict[str, Any]] = data["records"]
    return records
