"""safe-ctrl-pretrain: the starting residual model, by backpropagation on domain-randomized data.

    safe-ctrl-pretrain --system quadrotor_2d --out config/models/quadrotor_2d_residual.npz

Data come from the core environment: episodes whose plant mass and inertia are drawn from a range
around nominal, flown by LQR tracking a random circle or figure-8 with exploration noise on the
commands. Targets are what the controller's nominal one-step prediction misses. The network is
trained with Adam, then quantized to 16w8a (activation scales calibrated on the training inputs).
Deterministic: the same arguments give the same file, byte for byte.

    safe-ctrl-pretrain --extend-previous-input config/models/quadrotor_2d_residual.npz \
        --out config/models/quadrotor_2d_residual_prev_input.npz

writes that model with the previous command u_{k-1} as extra inputs (ResidualSpec.previous_input)
and zero weights on them: the starting function is exactly the pretrained one, for the adapter to
learn what depends on u_{k-1} (a plant's actuator lag) on board. No training. With
`--loss-scale INDEX FACTOR` (repeatable) the training loss's scale of a state is multiplied by
FACTOR: the adapter's loss weighting and outlier bound change, the network's function does not
(config/models/quadrotor_2d_residual_prev_input_mujoco.npz: `--loss-scale 5 20`, the pitch rate,
whose one-step error on the MuJoCo plant with rotor lag is far beyond the pretraining data's; docs/HIL.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController, ResidualSpec
from safe_ctrl_ros.env import SafeControlEnv
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.data import Batch, residual_targets
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.model_file import ResidualModel, extend_previous_input, load_model, save_model
from safe_ctrl_ros.learning.trainers import Backprop

# What the residual sees: velocities, attitude, rates and inputs (positions do not change the
# dynamics, so they are masked out); inputs relative to hover. The 16w8a model quantizes all inputs
# with one int8 scale, so each gain brings its input to about the range of the largest (the thrusts,
# up to ~2.2 x hover): on the 2D quadrotor the pitch (|theta| < 0.32 rad in the pretraining data)
# gets gain 6, else it would have only ~14 int8 levels per sign and that rounding alone would set
# a loss floor 20x above what backpropagation reaches in float (docs/LEARNING.md).
INPUT_GAINS = {
    "quadrotor_2d": [0.0, 1.5, 0.0, 1.5, 6.0, 0.6],
    "quadrotor_1d": [0.0, 1.0],
    "cartpole": [0.0, 1.0, 1.0, 0.2],
}
LQR_Q: dict[str, list[float]] = {
    "quadrotor_2d": [5, 0.1, 5, 0.1, 0.1, 0.1], "quadrotor_1d": [5, 0.1], "cartpole": [1, 1, 10, 1]
}


def collect(system: str, episodes: int, steps: int, dt: float, mass_range: tuple[float, float],
            seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    nominal = systems.make(system)
    xs, us, xns = [], [], []
    mass_key = "mass" if "mass" in nominal.params else "pole_mass"
    for _ in range(episodes):
        scale = rng.uniform(*mass_range)
        params = {mass_key: nominal.params[mass_key] * scale}
        if system.startswith("quadrotor"):
            task = {"kind": str(rng.choice(["circle", "figure8"])), "scale": float(rng.uniform(0.3, 0.8)),
                    "length": float(rng.uniform(4.0, 8.0)), "plane": "xz", "offset": [0.0, 1.0]}
            if system == "quadrotor_1d":
                task = {"kind": "stabilization", "goal": [float(rng.uniform(0.5, 1.5)), 0.0]}
        else:
            task = {"kind": "stabilization"}
        env = SafeControlEnv(system, task=task, dt=dt, episode_length=steps * dt, model_params=params)
        lqr = LqrController(nominal, LQR_Q[system], 0.1, dt)
        x, _ = env.reset(seed=int(rng.integers(2**31)))
        if system.startswith("quadrotor"):
            x = env.task.reference(0.0)[0][0]
            env.sim.reset(x)
        low, high = nominal.input_bounds
        for k in range(steps):
            x_ref, u_ref = env.task.reference(k * dt)
            u = lqr(x, x_ref[0], u_ref[0]) + rng.normal(0.0, 0.05, nominal.nu) * (high - low)
            u = np.clip(u, low, high)
            x_next, _, terminated, truncated, _ = env.step(u)
            xs.append(x)
            us.append(u)
            xns.append(x_next)
            x = x_next
            if terminated or truncated:
                break
    return residual_targets(nominal, np.array(xs), np.array(us), np.array(xns), dt, 1)


def pretrain(system: str, hidden: tuple[int, ...], episodes: int, steps: int, epochs: int, batch: int,
             lr: float, dt: float, mass_range: tuple[float, float], seed: int) -> ResidualModel:
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if system not in INPUT_GAINS:
        raise ConfigError(f"no pretraining recipe for '{system}'; known: {sorted(INPUT_GAINS)}")
    nominal = systems.make(system)
    data = collect(system, episodes, steps, dt, mass_range, seed)
    # Per-state normalization of the loss (and the network's output gain). A state the training data
    # never disturbs (e.g. the pitch rate when only the mass varies) would get a ~zero scale and
    # blow up any later error in it, so every scale is at least 1% of the largest.
    spread = data.target.std(axis=0)
    loss_scale = np.maximum(spread, 0.01 * float(spread.max()))
    hover = np.abs(nominal.equilibrium()[1]) + 1e-9
    in_gain = np.concatenate([INPUT_GAINS[system], 1.0 / hover])
    spec = ResidualSpec(nominal.nx, nominal.nu, hidden, "relu", in_gain, loss_scale)
    init = np.random.default_rng(seed + 1).normal(0.0, 0.1, spec.num_params)
    bp = Backprop(spec, init, loss_scale, lr=lr, seed=seed)
    order = np.random.default_rng(seed + 2)
    for _ in range(epochs):
        perm = order.permutation(len(data))
        for start in range(0, len(data) - batch + 1, batch):
            bp.step(data.take(perm[start : start + batch]))
    net = QuantizedMLP.from_float(spec, spec.unpack(bp.theta), np.hstack([data.x, data.u]))
    from safe_ctrl_ros.learning.data import normalized_mse

    meta = {
        "seed": seed, "episodes": episodes, "steps": steps, "epochs": epochs, "mass_range": list(mass_range),
        "samples": len(data), "train_loss_float": bp.loss(data),
        "train_loss_int": normalized_mse(net.forward_int(data.x, data.u), data.target, loss_scale),
    }
    return ResidualModel(system, dt, net, loss_scale, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="quadrotor_2d")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dt", type=float, default=0.02)
    parser.add_argument("--mass-range", type=float, nargs=2, default=[0.7, 1.6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extend-previous-input", type=Path, default=None, metavar="MODEL",
                        help="write MODEL with zero-weight u_prev inputs added instead of pretraining")
    parser.add_argument("--from-model", type=Path, default=None, metavar="MODEL",
                        help="write MODEL as it is but for --loss-scale (no training, no new inputs)")
    parser.add_argument("--loss-scale", type=float, nargs=2, action="append", default=[], metavar=("INDEX", "FACTOR"),
                        help="with --extend-previous-input or --from-model: state INDEX's loss scale times FACTOR")
    opts = parser.parse_args(argv)
    source = opts.extend_previous_input or opts.from_model
    if source is not None:
        try:
            extended = load_model(source)
            if opts.extend_previous_input is not None:
                extended = extend_previous_input(extended)
            scale = extended.loss_scale.copy()
            for index, factor in opts.loss_scale:
                if not (float(index).is_integer() and 0 <= index < scale.size and np.isfinite(factor) and factor > 0):
                    raise ConfigError(f"--loss-scale {index:g} {factor:g}: a state index 0..{scale.size - 1} "
                                      "and a factor > 0 are required")
                scale[int(index)] *= factor
        except ConfigError as exc:
            print(f"safe-ctrl-pretrain: error: {exc}", file=sys.stderr)
            return 2
        extended.loss_scale = scale
        extended.meta["extended_from" if opts.extend_previous_input is not None else "from"] = source.name
        if opts.loss_scale:
            extended.meta["loss_scale_factors"] = [[int(i), f] for i, f in opts.loss_scale]
        save_model(opts.out, extended)
        print(f"wrote {opts.out}: {source}" + (" with previous-input columns (zero weights)"
                                                if opts.extend_previous_input is not None else ""))
        return 0
    try:
        model = pretrain(opts.system, tuple(opts.hidden), opts.episodes, opts.steps, opts.epochs, opts.batch,
                         opts.lr, opts.dt, tuple(opts.mass_range), opts.seed)
    except ConfigError as exc:
        print(f"safe-ctrl-pretrain: error: {exc}", file=sys.stderr)
        return 2
    save_model(opts.out, model)
    print(f"wrote {opts.out}: {model.meta['samples']} transitions, train loss float "
          f"{model.meta['train_loss_float']:.4f}, 16w8a {model.meta['train_loss_int']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
