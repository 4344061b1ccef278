"""The on-robot adapter's core: a transition buffer, a trainer, and the publish/rollback policy.

Transitions are split deterministically: every `val_every`-th goes to a held-out validation
buffer, the rest to the training buffer (both fixed-size rings). A new model version is offered
only when the validation loss beats the best published one by `margin` (relative) and the
candidate passes the checks on the newest transitions in the controller's form (multi-step
prediction error, Jacobian size: safe_ctrl_ros.learning.validation). The last good versions are
kept, with their checks, so that a rollback goes back exactly, to a verified one. When to train,
on which transitions, and when to roll back (on request, or when violations rise after an update)
is the round loop's (safe_ctrl_ros.learning.rounds), shared by the adapter node and the offline
re-trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import casadi as ca
import numpy as np
from numpy.typing import ArrayLike

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.data import Batch, Ring, normalized_mse
from safe_ctrl_ros.learning.fixed_point import W_LIMIT, QuantizedMLP, bias_scale
from safe_ctrl_ros.learning.memory import TrainingMemory, training_memory
from safe_ctrl_ros.learning.model_file import ResidualModel
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer
from safe_ctrl_ros.learning.validation import JACOBIAN, ROLLOUT, CheckConfig, Checker, CheckResult
from safe_ctrl_ros.systems.base import WRENCH_SIZE, FloatArray, SymbolicModel

Method = Literal["qzo_ff", "fg_fp32", "bp"]
METHODS = ("qzo_ff", "fg_fp32", "bp")


@dataclass
class Version:
    number: int
    net: QuantizedMLP
    val_loss: float
    # The checks it passed before it went out (validation.py); None: published without them (checks
    # off), so not verified: a rollback does not go back to it.
    checks: CheckResult | None = None

    @property
    def verified(self) -> bool:
        return self.checks is not None and self.checks.passed


@dataclass
class AdapterConfig:
    method: Method = "qzo_ff"
    buffer_size: int = 2000
    val_every: int = 5
    batch_size: int = 128
    margin: float = 0.02
    min_val: int = 20
    trainer: ForwardGradientConfig = field(default_factory=lambda: ForwardGradientConfig(eps=16, lr=1e-3))
    bp_lr: float = 1e-3
    seed: int = 0
    # Transitions whose target is beyond this many loss scales in any state are dropped (counted):
    # e.g. a step where the plant held an older command after a missed deadline.
    outlier_scales: float = 50.0
    # A round whose validation loss exceeds this many times the newest version's on the same
    # validation transitions (or is not finite) means the training diverged (seen in the ROS graph
    # with gusts at lr 0.01): the trainer restarts from the newest version at half the step size.
    # 0 = never.
    diverge_factor: float = 3.0
    # The backoff's floor: a divergence that would take the step size below this fraction of the
    # configured one freezes the adapter instead (on the newest version; it trains and offers no
    # more versions, and says why: `frozen_reason`).
    min_lr_scale: float = 1.0 / 64.0
    # The checks on the newest transitions, in the controller's form, a candidate passes after the
    # validation guard before it goes out (safe_ctrl_ros.learning.validation).
    checks: CheckConfig = field(default_factory=CheckConfig)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"adapter method must be one of {METHODS}, got '{self.method}'")
        if self.buffer_size < 10 or self.val_every < 2 or self.batch_size < 1:
            raise ConfigError("adapter: buffer_size >= 10, val_every >= 2 and batch_size >= 1 are required")
        if not 0 <= self.margin < 1:
            raise ConfigError("adapter margin must be in [0, 1)")
        if self.diverge_factor != 0 and not self.diverge_factor > 1:
            raise ConfigError(f"adapter diverge_factor must be 0 (off) or > 1, got {self.diverge_factor}")
        if not 0.0 < self.min_lr_scale <= 1.0:
            raise ConfigError(f"adapter min_lr_scale must be in (0, 1], got {self.min_lr_scale}")
        self.checks.validate()


def _requantize(net: QuantizedMLP, theta: FloatArray) -> QuantizedMLP:
    """Float weights (from a float method) as int16 with fresh per-tensor scales; activation scales kept."""
    out = net.copy()
    pos = 0
    for i, t in enumerate(out.tensors()):
        vals = theta[pos : pos + t.size].reshape(t.shape)
        pos += t.size
        biggest = float(np.max(np.abs(vals)))
        if i % 2 == 0:
            scale = max(biggest, 1e-12) / W_LIMIT
            out.w_scale[i // 2] = scale
        else:
            scale = bias_scale(biggest, out.w_scale[i // 2])  # as the pretrained model's (fixed_point)
            out.b_scale[i // 2] = scale
        t[...] = np.clip(np.round(vals / scale), -W_LIMIT, W_LIMIT).astype(np.int16)
    return out


def _first_inputs(step: ca.Function, nx: int, nu: int) -> ca.Function:
    """(x, [u, u_prev], w) -> step(x, u, w): the nominal model on a previous-input ring's rows."""
    x, uu, w = ca.SX.sym("x", nx), ca.SX.sym("u", 2 * nu), ca.SX.sym("w", WRENCH_SIZE)
    return ca.Function("F_prev_input", [x, uu, w], [step(x, uu[:nu], w)])


class OnlineAdapter:
    def __init__(self, start: ResidualModel, nominal: SymbolicModel, config: AdapterConfig | None = None,
                 substeps: int = 1) -> None:
        self.cfg = cfg = config or AdapterConfig()
        cfg.validate()
        spec = start.net.spec
        if (spec.nx, spec.nu) != (nominal.nx, nominal.nu):
            raise ConfigError(f"the residual model is for nx={spec.nx}, nu={spec.nu}; {nominal.name} has "
                              f"{nominal.nx}, {nominal.nu}")
        self.nominal = nominal
        self.step_fn = nominal.rk4_function(start.dt, substeps)
        if spec.previous_input:  # it takes the network's control inputs [u, u_prev], uses u (F is nominal)
            self.step_fn = _first_inputs(self.step_fn, nominal.nx, nominal.nu)
        self.scale = start.loss_scale
        self.net = start.net.copy()
        self.start_net = start.net.copy()
        self.train_buf = Ring(cfg.buffer_size, nominal.nx, spec.n_u_in)
        self.val_buf = Ring(max(cfg.buffer_size // (cfg.val_every - 1), cfg.min_val), nominal.nx, spec.n_u_in)
        self.seen = 0
        self.outliers = 0
        self.rng = np.random.default_rng(cfg.seed)
        self.restarts = 0  # divergence restarts (each halves the step size)
        self.lr_scale = 1.0
        self._passes_before = 0  # forward passes of the trainers replaced by restarts and rollbacks
        self.trainer = self._make_trainer()
        self.memory: TrainingMemory | None = None  # measure_memory(), or the first training step
        self.history: list[Version] = []
        # The newest version's validation loss on the validation transitions of the last proposal
        # (the buffer changes from round to round; inf before the first proposal).
        self.best_val = np.inf
        self.frozen = False  # by the divergence backoff's floor (a hand or safety freeze is the round loop's)
        self.frozen_reason = ""
        self.last_train_loss = float("nan")
        # The checks before publishing: the newest transitions in order, the candidates failing each.
        ring_u = self.train_buf.u.shape[1]
        self.recent = Ring(cfg.checks.window + cfg.checks.horizon + 1, nominal.nx, ring_u)  # y: the next state
        self.checker = Checker(cfg.checks, spec, self.step_fn, self.scale)
        self.failed_checks = {ROLLOUT: 0, JACOBIAN: 0}
        self.last_check: CheckResult | None = None  # of the last candidate that passed the guard
        self.rejected_by = ""  # why the last proposal offered no version: "validation" or the checks failed

    def _make_trainer(self) -> QzoFfTrainer | Fp32ForwardGradient | Backprop:
        """A trainer starting from self.net, at the current step-size scale; after a restart its
        perturbation seeds differ from the run that diverged."""
        cfg, spec = self.cfg, self.net.spec
        seed = cfg.trainer.seed + 7919 * self.restarts
        trainer_cfg = replace(cfg.trainer, lr=cfg.trainer.lr * self.lr_scale, seed=seed)
        if cfg.method == "qzo_ff":
            return QzoFfTrainer(self.net, self.scale, trainer_cfg)
        if cfg.method == "fg_fp32":
            return Fp32ForwardGradient(spec, self.net.theta(), self.scale, trainer_cfg)
        # One torch thread: on the robot the training shares the cores with the control loop;
        # with torch's default (a thread per core) it took the controller's core too and its
        # p99 solve time rose 5x in bench/adapter_closed_loop.py.
        return Backprop(spec, self.net.theta(), self.scale, lr=cfg.bp_lr * self.lr_scale, seed=cfg.seed + self.restarts,
                        threads=1)

    def _restart_from(self, net: QuantizedMLP) -> None:
        """Continue training from `net` (the newest version, or the start model)."""
        for dst, src in zip(self.net.tensors(), net.tensors(), strict=True):
            dst[...] = src
        self.net.w_scale[:], self.net.b_scale[:] = net.w_scale, net.b_scale
        self._passes_before += int(self.trainer.forward_passes)
        self.trainer = self._make_trainer()

    @property
    def forward_passes(self) -> int:
        return self._passes_before + int(self.trainer.forward_passes)

    # --- data -------------------------------------------------------------------------------------
    def add(self, x: ArrayLike, u: ArrayLike, x_next: ArrayLike, u_prev: ArrayLike | None = None,
            disturbance: ArrayLike | None = None) -> bool:
        """One transition (x_k, u_k, x_k+1); for a residual with previous_input also u_prev = u_k-1,
        the command applied the step before (None: not known, e.g. an episode's first step; then
        u_k is used: the command held). Without the option u_prev is ignored.

        `disturbance`: the NMPC's offset-free disturbance estimate d_k the command u_k was planned
        with (NmpcResult.disturbance, ControllerStatus.disturbance_estimate: one entry per state),
        removed from the target, x_k+1 - d_k - F(x_k, u_k), so that the residual does not learn what
        the estimate already carries (docs/CONTROLLERS.md, Offset-free prediction). None or empty:
        nothing removed. The checks on the newest transitions (learning/validation.py) get the same
        next state x_k+1 - d_k (their rollouts hold d_k as the offset outside the model). False
        (not added) when it is neither empty nor one finite entry per state."""
        xv, uv, xn = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (x, u, x_next))
        if xv.size != self.nominal.nx or uv.size != self.nominal.nu or xn.size != self.nominal.nx:
            return False
        if not (np.all(np.isfinite(xv)) and np.all(np.isfinite(uv)) and np.all(np.isfinite(xn))):
            return False
        if disturbance is not None:
            dv = np.asarray(disturbance, dtype=np.float64).reshape(-1)
            if dv.size:
                if dv.size != self.nominal.nx or not np.all(np.isfinite(dv)):
                    return False
                xn = xn - dv
        inputs = uv
        if self.net.spec.previous_input:
            pv = uv if u_prev is None else np.asarray(u_prev, dtype=np.float64).reshape(-1)
            if pv.size != self.nominal.nu or not np.all(np.isfinite(pv)):
                return False
            inputs = np.concatenate([uv, pv])
        with np.errstate(over="ignore", invalid="ignore"):
            target = xn - np.asarray(self.step_fn(xv, inputs, np.zeros(WRENCH_SIZE))).reshape(-1)
        # A non-finite target (the nominal model overflows on a huge, finite state) is an outlier
        # even with outlier_scales 0: one NaN in the buffer would make every loss NaN.
        far = self.cfg.outlier_scales > 0 and np.any(np.abs(target) > self.cfg.outlier_scales * self.scale)
        if far or not np.all(np.isfinite(target)):
            self.outliers += 1
            return False
        self.seen += 1
        (self.val_buf if self.seen % self.cfg.val_every == 0 else self.train_buf).add(xv, inputs, target)
        self.recent.add(xv, inputs, xn)
        return True

    @property
    def ready(self) -> bool:
        return self.val_buf.count >= self.cfg.min_val and self.train_buf.count >= self.cfg.batch_size

    # --- training ---------------------------------------------------------------------------------
    def current_net(self) -> QuantizedMLP:
        if isinstance(self.trainer, QzoFfTrainer):
            return self.net
        return _requantize(self.net, np.asarray(self.trainer.theta, dtype=np.float64))

    def val_loss(self, net: QuantizedMLP | None = None) -> float:
        batch = self.val_buf.batch()
        use = net or self.current_net()
        return normalized_mse(use.forward_int(batch.x, batch.u), batch.target, self.scale)

    def train(self, steps: int) -> float:
        if self.frozen or not self.ready:
            return float("nan")
        losses = []
        for _ in range(steps):
            idx = self.rng.integers(0, self.train_buf.count, self.cfg.batch_size)
            batch = self.train_buf.batch(idx)
            if self.memory is None:
                self.measure_memory(batch)
            losses.append(self.trainer.step(batch))
        self.last_train_loss = float(np.mean(losses))
        return self.last_train_loss

    def reference(self) -> QuantizedMLP:
        """The model in force: the newest version, or the start model before any."""
        return self.history[-1].net if self.history else self.start_net

    def propose(self) -> Version | None:
        """A new version when the validation loss improved enough on the newest version's; else None.

        Like with like: both losses are taken on the same validation transitions, the buffer as it
        is now. A loss from an earlier, smaller buffer would make new hard data (gusts) look like a
        divergence, or hide a real improvement."""
        self.rejected_by = ""
        if self.frozen or not self.ready:
            return None
        reference = self.val_loss(self.reference())
        self.best_val = reference
        net = self.current_net()
        loss = self.val_loss(net)
        if loss < reference * (1.0 - self.cfg.margin):
            checks = self.check(net)
            if checks is not None and not checks.passed:
                # Not published; the trainer goes on from these weights (the next round proposes again).
                for name in checks.failed:
                    self.failed_checks[name] += 1
                self.rejected_by = ", ".join(checks.failed)
                return None
            self.best_val = loss
            version = Version(len(self.history) + 1, net.copy(), loss, checks)
            self.history.append(version)
            return version
        self.rejected_by = "validation"
        factor = self.cfg.diverge_factor
        if factor and not loss <= factor * reference:
            self._diverged(loss, reference)
        return None

    def check(self, net: QuantizedMLP) -> CheckResult | None:
        """The checks of `net` against the model in force on the newest transitions (None: checks off)."""
        if not self.cfg.checks.enabled:
            return None
        self.last_check = self.checker.check(net.theta(), self.reference().theta(), self.recent)
        return self.last_check

    @property
    def verified_versions(self) -> list[int]:
        """The versions a rollback may go back to: the start model (0) and those that passed the checks."""
        return [0, *(v.number for v in self.history if v.verified)]

    def _diverged(self, loss: float, reference: float) -> None:
        """Restart from the newest version at half the step size, or freeze at the backoff's floor."""
        if self.lr_scale * 0.5 < self.cfg.min_lr_scale:
            self._restart_from(self.reference())  # the diverged weights are dropped
            self.frozen = True
            self.frozen_reason = (
                f"training diverged {self.restarts + 1} times (validation loss {loss:.4g}, above "
                f"{self.cfg.diverge_factor:g}x the newest version's {reference:.4g}): halving the step size again "
                f"({self.lr_scale:g}x) would take it below min_lr_scale {self.cfg.min_lr_scale:g}; frozen on "
                f"v{self.history[-1].number if self.history else 0}"
            )
            return
        self.restarts += 1
        self.lr_scale *= 0.5
        self._restart_from(self.reference())  # at the new step size, with new perturbation seeds

    def rollback(self) -> Version | None:
        """Drop the newest version and go back to the newest verified one before it (versions published
        without the checks are dropped on the way); None: back to the start model."""
        if not self.history:
            return None
        self.history.pop()
        while self.history and not self.history[-1].verified:
            self.history.pop()
        previous = self.history[-1] if self.history else None
        back_to = self.reference()
        self.best_val = self.val_loss(back_to)
        self._restart_from(back_to)  # every method trains on from the version it went back to
        return previous

    def measure_memory(self, batch: Batch | None = None) -> TrainingMemory:
        """Measure the trainer's training memory beyond inference (safe_ctrl_ros.learning.memory) on
        `batch`, by default `batch_size` rows of zeros: the figure depends on the shapes only, not on
        the values. Once per adapter: a restart's trainer has the same method, model and batch size.
        The trainer is not stepped (copies of it are). In a multi-threaded process, call it while no
        other thread allocates (the adapter node does so before it spins): tracemalloc counts every
        thread's allocations."""
        if batch is None:
            n, nx, nu = self.cfg.batch_size, self.nominal.nx, self.net.spec.n_u_in
            batch = Batch(np.zeros((n, nx)), np.zeros((n, nu)), np.zeros((n, nx)))
        self.memory = training_memory(self.trainer, batch)
        return self.memory

    def extra_bytes(self) -> int:
        """Training memory beyond inference, measured (measure_memory; 0 before it is)."""
        return self.memory.extra_bytes if self.memory is not None else 0
