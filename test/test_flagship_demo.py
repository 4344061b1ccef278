"""`make demo`'s tool end to end, shortened: a recorded flagship run analysed into the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safe_ctrl_ros.bringup.flagship import main


def test_flagship_tool_records_and_tabulates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--duration", "4", "--variants", "qzo_ff"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert "| qzo_ff: QZO-FF on board" in (run_dir / "table.md").read_text()
    (row,) = json.loads((run_dir / "report.json").read_text())
    assert row["recording_complete"] is True
    assert row["steps"] == 201  # 4 s at 50 Hz and the initial state: the recorder started the episode
    assert row["violation_steps"] == 0
    assert row["adapter_memory_bytes"] > 0
    assert (run_dir / "plots" / "tracking_error.png").is_file()
    assert f"bags:  {run_dir / 'qzo_ff'}" in out
