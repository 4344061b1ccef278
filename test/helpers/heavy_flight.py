"""A recorded-looking flight shared by the retraining and adapter-target tests: the 30% heavier 2D
quadrotor hovering at z = 1 m under LQR (on the nominal model) with 5% thrust noise."""

from __future__ import annotations

import numpy as np

from safe_ctrl_ros import systems
from safe_ctrl_ros.control.lqr import LqrController
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray

DT = 0.02
DT_NS = round(DT * 1e9)


def heavy_run(steps: int = 600, seed: int = 3) -> tuple[list[tuple[int, FloatArray]], dict[int, FloatArray]]:
    """(stamp, x) of each state and the command by stamp, stamps k * DT in ns."""
    heavy = systems.make("quadrotor_2d", mass=0.027 * 1.3)
    step = heavy.rk4_function(DT, 10)
    goal = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    lqr = LqrController(systems.make("quadrotor_2d"), [5, 0.1, 5, 0.1, 0.1, 0.1], [0.1, 0.1], DT, x_goal=goal)
    rng = np.random.default_rng(seed)
    x = goal.copy()
    states, cmds = [], {}
    for k in range(steps):
        states.append((k * DT_NS, x.copy()))
        u = lqr(x) * (1.0 + 0.05 * rng.standard_normal(2))
        cmds[k * DT_NS] = u
        x = np.asarray(step(x, u, np.zeros(WRENCH_SIZE))).reshape(-1)
    return states, cmds
