"""safe-ctrl-render's core (frames of recorded states through MuJoCo's offscreen renderer, GIF and
strip output, its errors) and where the MJCF models ship (package data, the colcon install)."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: it picks its GL backend then
pytest.importorskip("mujoco")

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation.mujoco import (
    SYSTEMS,
    model_path,
    render,
)

REPO = Path(__file__).resolve().parents[1]


def _frames(states: list[tuple[float, np.ndarray]], system: str = "cartpole", fps: float = 50.0) -> list[np.ndarray]:
    try:
        frames, _ = render.frames_of(states, {}, system, fps, 160, 120)
    except ConfigError as exc:
        if "no offscreen OpenGL" in str(exc):
            pytest.skip(str(exc))
        raise
    return frames


def test_frames_show_the_recorded_state() -> None:
    """The pole upright and tipped over give different pictures; the same state the same picture."""
    states = [(0.0, np.array([0.0, 0.0, 0.0, 0.0])), (0.02, np.array([0.0, 0.0, 0.0, 0.0])),
              (0.04, np.array([0.0, 0.0, 1.2, 0.0]))]
    frames = _frames(states)
    assert len(frames) == 3
    assert frames[0].shape == (120, 160, 3)
    assert frames[0].std() > 5  # not a blank image
    assert np.array_equal(frames[0], frames[1])
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).sum() > 1000


def test_frame_rate_picks_states() -> None:
    states = [(k * 0.02, np.array([0.01 * k, 0.0, 0.0, 0.0])) for k in range(51)]  # 1 s at 50 Hz
    assert len(_frames(states, fps=10.0)) == 11


def test_gif_and_strip_are_written(tmp_path: Path) -> None:
    from PIL import Image

    states = [(k * 0.02, np.array([0.0, 0.0, 1.0 - 0.02 * k, 0.0, 0.05 * k, 0.0])) for k in range(10)]
    frames = _frames(states, "quadrotor_2d")
    out = tmp_path / "run.gif"
    render.write_video(frames, out, 50.0)
    with Image.open(out) as gif:
        assert gif.n_frames == len(frames)
        assert gif.size == (160, 120)
    s = render.strip(frames, 4)
    assert s.shape == (120, 4 * 160 + 3 * 2, 3)


def test_bad_output_and_missing_bag_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match=r"must be \.gif or \.mp4"):
        render.write_video([frame], tmp_path / "run.avi", 25.0)
    assert render.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.gif")]) == 2
    assert "no such bag" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="engine 'mujoco' has no model of 'quadrotor_1d'"):
        render.frames_of([(0.0, np.zeros(2))], {}, "quadrotor_1d", 25.0, 16, 16)


def test_models_ship_as_package_data() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "models/*.xml" in cfg["options.package_data"]["safe_ctrl_ros.simulation.mujoco"]
    for system in SYSTEMS:
        assert Path(model_path(system)).is_file()
    installed = REPO / "install" / "safe_ctrl_ros"
    if installed.is_dir():  # the colcon install (CMakeLists installs the whole package folder)
        found = {p.name for p in installed.rglob("simulation/mujoco/models/*.xml")}
        assert found == {f"{s}.xml" for s in SYSTEMS}


def test_flagship_plots_gain_a_frame_strip(tmp_path: Path) -> None:
    from PIL import Image

    from safe_ctrl_ros.bag.report import Run
    from safe_ctrl_ros.bringup.flagship import frame_strips

    run = Run("qzo_ff", system="quadrotor_2d")
    run.states = [(k * 0.02, np.array([0.01 * k, 0.0, 1.0, 0.0, 0.0, 0.0])) for k in range(20)]
    run.references = {t: x for t, x in run.states}
    made = frame_strips([run], tmp_path)
    if not made:
        pytest.skip("no offscreen OpenGL here")
    assert made == [tmp_path / "qzo_ff_frames.png"]
    with Image.open(made[0]) as img:
        assert img.size == (6 * 320 + 5 * 2, 240)
