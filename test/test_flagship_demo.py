"""`make demo`'s tool end to end, shortened: a recorded flagship run analysed into the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safe_ctrl_ros.bringup.flagship import main

REPO = Path(__file__).resolve().parents[1]


def _qzo_ff_memory() -> int:
    """Training memory beyond inference of QZO-FF on the flagship's pretrained residual, batch 128."""
    import numpy as np

    from safe_ctrl_ros.learning.data import Batch
    from safe_ctrl_ros.learning.memory import training_memory
    from safe_ctrl_ros.learning.model_file import load_model
    from safe_ctrl_ros.learning.trainers import ForwardGradientConfig, QzoFfTrainer

    start = load_model(REPO / "config" / "models" / "quadrotor_2d_residual.npz", 6, 2)
    rng = np.random.default_rng(0)
    batch = Batch(rng.normal(size=(128, 6)), rng.normal(size=(128, 2)), rng.normal(size=(128, 6)))
    trainer = QzoFfTrainer(start.net.copy(), start.loss_scale, ForwardGradientConfig(eps=64, lr=0.01))
    return training_memory(trainer, batch).extra_bytes


def test_flagship_tool_records_and_tabulates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--duration", "4", "--variants", "qzo_ff"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert "| qzo_ff: QZO-FF on board" in (run_dir / "table.md").read_text()
    (row,) = json.loads((run_dir / "report.json").read_text())
    assert row["recording_complete"] is True
    assert row["steps"] == 201  # 4 s at 50 Hz and the initial state: the recorder started the episode
    assert row["violation_steps"] == 0
    # AdapterStatus.training_memory_bytes: the adapter's measurement (learning/memory.py) of its
    # QZO-FF trainer, against the same rule applied here to the same model and batch size.
    assert row["adapter_memory_bytes"] == pytest.approx(_qzo_ff_memory(), rel=0.1)
    assert (run_dir / "plots" / "tracking_error.png").is_file()
    assert f"bags:  {run_dir / 'qzo_ff'}" in out
