"""safe-ctrl-render: replay a recorded run through MuJoCo's offscreen renderer, for people to watch.

    safe-ctrl-render BAG --out run.gif [--fps 25] [--width 480] [--height 320] [--strip strip.png]
                     [--frames 6] [--system NAME] [--camera side|track]

Reads the bag's `plant/state` (and `plant/reference`, drawn as a green sphere: where the vehicle
or cart should be), poses the system's MJCF model (safe_ctrl_ros/simulation/mujoco/models) at each
recorded state through the same state mapping as the MuJoCo plant, and renders it. Any run can be
rendered, whichever engine simulated it (a CasADi run too: the mapping is exact). Output by the
extension of --out: `.gif` (Pillow), `.mp4` (needs `ffmpeg` on PATH). `--strip` also writes
`--frames` evenly spaced frames side by side as one PNG (for a report or the README).

Rendering needs an OpenGL context without a display: MUJOCO_GL=egl by default (Mesa's software
rasterizer through libEGL: packages libegl1 and libgl1-mesa-dri on Debian/Ubuntu), or set
MUJOCO_GL=osmesa (package libosmesa6). The tool says which is missing when neither works.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation.mujoco.mjcf import check_system, mjcf_text, to_mujoco
from safe_ctrl_ros.simulation.mujoco.settings import MujocoSettings
from safe_ctrl_ros.systems.base import FloatArray

GL_HELP = {
    "egl": "libEGL with Mesa (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri)",
    "osmesa": "OSMesa (Debian/Ubuntu: apt-get install libosmesa6)",
}


def _import_mujoco() -> Any:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
    except ImportError as exc:
        raise ConfigError(f"safe-ctrl-render needs the mujoco package (requirements/runtime.txt): {exc}") from exc
    return mujoco


TRAIL_EVERY = 5  # states between two dots of the flown path
REF_RGBA = np.array([0.1, 0.7, 0.2, 0.35], dtype=np.float32)
NOW_RGBA = np.array([0.1, 0.8, 0.2, 0.8], dtype=np.float32)
TRAIL_RGBA = np.array([0.9, 0.3, 0.1, 0.6], dtype=np.float32)


def _world(model: Any, x: FloatArray) -> FloatArray:
    """The world position (x, y, z) of the state's position entries (the cart's, the vehicle's)."""
    p = np.zeros(3)
    for axis, k in zip(model.position_axes, model.position_indices, strict=True):
        p["xyz".index(axis)] = x[k]
    return p


def _markers(ref_path: list[FloatArray], trail: list[FloatArray],
             now: FloatArray | None) -> list[tuple[FloatArray, np.ndarray, float]]:
    """Dots to draw: the reference path (faint green), the flown path so far (orange), the reference now."""
    out = [(p, REF_RGBA, 0.006) for p in ref_path] + [(p, TRAIL_RGBA, 0.006) for p in trail]
    return out if now is None else [*out, (now, NOW_RGBA, 0.02)]


def frames_of(states: list[tuple[float, FloatArray]], references: dict[float, FloatArray], system: str, fps: float,
              width: int, height: int, camera: str = "side",
              at: list[float] | None = None) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames (height x width x 3, uint8) of the recorded states at `fps` (or at the sim times
    `at`), and their sim times; the reference path, the path flown so far and the reference now
    are drawn as dots."""
    check_system(system)
    mujoco = _import_mujoco()
    from safe_ctrl_ros import systems

    model = systems.make(system)
    mj = mujoco.MjModel.from_xml_string(mjcf_text(model, MujocoSettings.nominal()))
    mj.vis.global_.offwidth, mj.vis.global_.offheight = max(width, 640), max(height, 480)
    data = mujoco.MjData(mj)
    gl = os.environ.get("MUJOCO_GL", "egl")
    try:
        renderer = mujoco.Renderer(mj, height, width)
    except Exception as exc:  # the GL backend failed to load or to make a context
        other = "osmesa" if gl == "egl" else "egl"
        raise ConfigError(f"no offscreen OpenGL for MUJOCO_GL={gl}: {exc}. Install {GL_HELP.get(gl, gl)}, or "
                          f"run with MUJOCO_GL={other} ({GL_HELP[other]})") from exc
    cam = mujoco.MjvCamera()
    fixed = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_CAMERA, "side")
    times = np.array([t for t, _ in states])
    t0, t1 = float(times[0]), float(times[-1])
    want = np.arange(t0, t1 + 1e-9, 1.0 / fps) if at is None else np.asarray(at, dtype=np.float64)
    ref_times = sorted(references)
    ref_path = [_world(model, references[t]) for t in ref_times[:: max(1, len(ref_times) // 300)]]
    flown = [_world(model, x) for _, x in states]
    frames, stamps = [], []
    for t in want:
        i = int(np.searchsorted(times, t - 1e-9))
        i = min(i, len(states) - 1)
        ts, x = states[i]
        data.qpos[:], data.qvel[:] = to_mujoco(system, x)
        mujoco.mj_forward(mj, data)  # kinematics, cameras and lights
        if camera == "track":
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.lookat[:] = data.xpos[-1]
            cam.distance, cam.azimuth, cam.elevation = 1.5, 90.0, -10.0
            renderer.update_scene(data, camera=cam)
        else:
            renderer.update_scene(data, camera=fixed)
        scene = renderer.scene
        now = references.get(ts)
        target = None if now is None else _world(model, now)
        for point, rgba, size in _markers(ref_path, flown[: i + 1 : TRAIL_EVERY], target):
            if scene.ngeom >= scene.maxgeom:
                break
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_SPHERE, np.array([size, 0.0, 0.0]),
                                point, np.eye(3).reshape(-1), rgba)
            scene.ngeom += 1
        frames.append(np.array(renderer.render(), dtype=np.uint8))
        stamps.append(ts)
    renderer.close()
    return frames, stamps


def check_output(path: Path) -> str | None:
    """The ffmpeg to write `path` with (None for a .gif); ConfigError for another extension or no ffmpeg."""
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return None
    if suffix != ".mp4":
        raise ConfigError(f"--out {path}: the extension must be .gif or .mp4")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ConfigError("an .mp4 needs ffmpeg on PATH (Debian/Ubuntu: apt-get install ffmpeg); "
                          "or write a .gif (--out run.gif)")
    return ffmpeg


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """`.gif` with Pillow, `.mp4` through ffmpeg; ConfigError naming what is missing."""
    ffmpeg = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ffmpeg is None:
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        h, w = frames[0].shape[:2]
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", str(path)]
        subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)


def strip(frames: list[np.ndarray], count: int) -> np.ndarray:
    """`count` evenly spaced frames side by side (a 2-pixel white gap between them)."""
    pick = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    h = frames[0].shape[0]
    gap = np.full((h, 2, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i in pick:
        parts += [frames[i], gap]
    return np.concatenate(parts[:-1], axis=1)


def frame_strip(states: list[tuple[float, FloatArray]], references: dict[float, FloatArray], system: str,
                path: Path, count: int = 6, width: int = 320, height: int = 240) -> Path:
    """A PNG of `count` evenly spaced frames of a run side by side (rendering only those frames)."""
    from PIL import Image

    pick = np.linspace(0, len(states) - 1, min(count, len(states))).round().astype(int)
    frames, _ = frames_of(states, references, system, 1.0, width, height, at=[states[i][0] for i in pick])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip(frames, count)).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-render", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="run.gif or run.mp4")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--camera", choices=("side", "track"), default="side")
    parser.add_argument("--system", help="the system, if the bag does not name it")
    parser.add_argument("--strip", type=Path, help="also write a PNG of --frames frames side by side")
    parser.add_argument("--frames", type=int, default=6)
    opts = parser.parse_args(argv)
    try:
        if not (opts.fps > 0 and opts.width > 0 and opts.height > 0 and opts.frames > 0):
            raise ConfigError("--fps, --width, --height and --frames must be positive")
        check_output(opts.out)  # before the rendering: a wrong extension or no ffmpeg fails at once
        if not opts.bag.exists():
            raise ConfigError(f"{opts.bag}: no such bag")
        from safe_ctrl_ros.bag.report import load_run

        run = load_run(opts.bag, opts.system)
        if not run.states:
            raise ConfigError(f"{opts.bag}: no plant/state messages to render")
        if run.system is None:
            raise ConfigError(f"{opts.bag}: {run.system_note or 'the system is unknown'} (pass --system)")
        frames, stamps = frames_of(run.states, run.references, run.system, opts.fps, opts.width, opts.height,
                                   opts.camera)
        write_video(frames, opts.out, opts.fps)
        print(f"{opts.out}: {len(frames)} frames of {run.system}, t = {stamps[0]:.2f}..{stamps[-1]:.2f} s")
        if opts.strip is not None:
            from PIL import Image

            opts.strip.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(strip(frames, opts.frames)).save(opts.strip)
            print(f"{opts.strip}: {min(opts.frames, len(frames))} frames side by side")
    except ConfigError as exc:
        print(f"safe-ctrl-render: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
