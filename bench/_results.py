"""What every benchmark does with its records: a JSON list at the documented path."""

from __future__ import annotations

from pathlib import Path

from safe_ctrl_ros.json_out import dumps


def write_records(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(records))  # a figure without data (nan) is written as null
    print(f"wrote {path}")
