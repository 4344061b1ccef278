"""`MujocoPlantSim`: the plant's simulator on MuJoCo, behind `PlantSim`'s interface.

The loop, the episode, the watchdog and the node use a `PlantSim` only through its interface
(`x`, `k`, `t_ns`, `u_last`, `wrench`, `check_command`, `advance`, `reset`, `set_model`, `stats`),
so the whole plant contract (topics, lockstep and real time, watchdog, parameters, summary) holds
unchanged with this engine. Per control period `dt` the command is held in `ctrl` for `dt /
timestep` physics steps; the external wrench (`plant/wrench`) acts on the body's centre of mass
in the world frame (`xfrc_applied`; the cart-pole's on the pole, as in the symbolic model), plus
the drag force when it is on. A change of `model.*` parameters (the injector's parameter
disturbances) recompiles the model and carries the state, including the rotors' lagged thrust.
"""

from __future__ import annotations

import mujoco
import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.simulation.mujoco.mjcf import BODY, check_system, from_mujoco, mjcf_text, to_mujoco
from safe_ctrl_ros.simulation.mujoco.settings import MujocoSettings
from safe_ctrl_ros.simulation.plant import PlantSim
from safe_ctrl_ros.systems.base import FloatArray, SymbolicModel


class MujocoPlantSim(PlantSim):
    """Zero-order-hold simulation of `model`'s MJCF counterpart at control period `dt`."""

    engine = "mujoco"

    def __init__(
        self, model: SymbolicModel, dt: float, settings: MujocoSettings | None = None, x0: ArrayLike | None = None
    ) -> None:
        check_system(model.name)
        self.settings = MujocoSettings() if settings is None else settings
        self.physics_steps = self.settings.physics_steps(dt)
        self.mj: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        super().__init__(model, dt, self.physics_steps, x0)

    # --- PlantSim ---------------------------------------------------------------------------------
    def set_model(self, model: SymbolicModel) -> None:
        """Recompile the MJCF with `model`'s parameters; the state (and the rotors' thrust) carries over."""
        if (model.nx, model.nu, model.name) != (self.model.nx, self.model.nu, self.model.name):
            raise ConfigError("a replacement model must be of the same system")
        try:
            mj = mujoco.MjModel.from_xml_string(mjcf_text(model, self.settings))
        except ValueError as exc:  # MuJoCo's compiler error
            raise ConfigError(f"MuJoCo could not compile the {model.name} model: {exc}") from exc
        data = mujoco.MjData(mj)
        if self.data is not None:
            data.qpos[:], data.qvel[:], data.act[:] = self.data.qpos, self.data.qvel, self.data.act
            data.ctrl[:] = self.data.ctrl
            mujoco.mj_forward(mj, data)
        self.mj, self.data = mj, data
        self.model = model
        self.u_low, self.u_high = model.input_bounds
        self._body = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, BODY[model.name])
        self._drag = model.name != "cartpole" and (self.settings.drag_linear > 0 or self.settings.drag_quadratic > 0)

    def reset(self, x0: ArrayLike | None = None, keep_time: bool = False) -> None:
        super().reset(x0, keep_time)
        self.put_state(self.x, self.u_last)

    def advance(self, u: FloatArray | None) -> FloatArray:
        """Hold `u` (None: the last command) for one control period of physics steps."""
        if u is not None:
            self.u_last = u
        mj, data = self._mj()
        data.ctrl[:] = self.u_last
        if self._drag:
            for _ in range(self.physics_steps):
                data.xfrc_applied[self._body] = self._wrench_with_drag(data)
                mujoco.mj_step(mj, data)
        else:
            data.xfrc_applied[self._body] = self.wrench
            mujoco.mj_step(mj, data, nstep=self.physics_steps)
        self.x = from_mujoco(self.model.name, data.qpos, data.qvel)
        self.k += 1
        self.stats.steps += 1
        return self.x

    def describe(self) -> dict[str, object]:
        s = self.settings
        return {"engine": self.engine, "physics": {
            "integrator": s.integrator, "substeps": self.physics_steps, "step_s": s.timestep,
            "mujoco": mujoco.__version__, "effects": s.active(self.model.name)}}

    # --- MuJoCo -----------------------------------------------------------------------------------
    def _mj(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        if self.mj is None or self.data is None:
            raise RuntimeError("MujocoPlantSim: the model is not built yet")
        return self.mj, self.data

    def put_state(self, x: FloatArray, thrust: FloatArray) -> None:
        """Write the symbolic state x into MuJoCo (the rotors' lagged thrust starts at `thrust`)."""
        mj, data = self._mj()
        mujoco.mj_resetData(mj, data)
        data.qpos[:], data.qvel[:] = to_mujoco(self.model.name, x)
        if mj.na:
            data.act[:] = thrust
        data.ctrl[:] = thrust
        mujoco.mj_forward(mj, data)

    def thrust(self) -> FloatArray:
        """Each actuator's force now (N): the lagged thrust (MuJoCo's `act`) with `thrust_lag`, else the command."""
        mj, data = self._mj()
        return np.asarray(data.act if mj.na else data.ctrl, dtype=np.float64).copy()

    def _wrench_with_drag(self, data: mujoco.MjData) -> FloatArray:
        v = np.zeros(3)
        if self.model.name == "quadrotor_3d":
            v[:] = data.qvel[0:3]
        else:  # quadrotor_2d: slide x, slide z
            v[0], v[2] = data.qvel[0], data.qvel[1]
        s = self.settings
        out = self.wrench.copy()
        out[0:3] -= (s.drag_linear + s.drag_quadratic * float(np.linalg.norm(v))) * v
        return out
