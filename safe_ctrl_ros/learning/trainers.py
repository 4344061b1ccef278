"""Training the residual: QZO-FF (integer forward gradients) and its two baselines.

All three share `step(batch) -> loss` and `loss(batch)`, the same data and the same per-state
normalized squared error, so a comparison differs only in the method.

QZO-FF (Feng et al., "Stepping Forward on the Last Mile", NeurIPS 2024), one step:
  for j in 1..m: regenerate an integer perturbation z_j in {-1, 0, +1} from the step's seed (never
  stored; one tensor at a time), evaluate the integer model at w + eps z_j and w - eps z_j (exact:
  weights stay within +-(32767 - GUARD) and eps <= GUARD, so nothing saturates), restore w exactly;
  estimate, per tensor t with scale s_t (float value = s_t * integer),
            g_t = mean_j d_j z_j,t / s_t^2  with d_j = (L+ - L-) / (2 eps)   ("projected")
       or   g_t = mean_j sign(L+ - L-) z_j,t / s_t                         ("sign": sign-m-SPSA),
  which makes the float-space step an unbiased SGD step (E[s_t g_t] = dL/dw for "projected") and
  `lr` a float-space learning rate shared with the fp32 baseline; optional momentum v = beta v + g;
  update w -= lr * g in integer units with seeded stochastic rounding, saturated to
  +-(32767 - GUARD). Which tensors train: all, the last layer, or biases; `sparsity` leaves that
  fraction of entries unperturbed (a seeded mask per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from safe_ctrl_ros.control.residual import ResidualSpec
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.data import Batch, normalized_mse
from safe_ctrl_ros.learning.fixed_point import A_MAX, GUARD, W_LIMIT, QuantizedMLP
from safe_ctrl_ros.systems.base import FloatArray

Estimator = Literal["projected", "sign"]
Trainable = Literal["all", "last_layer", "biases"]


@dataclass
class ForwardGradientConfig:
    eps: float = 16.0  # perturbation: QZO-FF in integer units (<= GUARD); fp32 in float units
    lr: float = 1e-3  # step size in float units (for QZO-FF converted per tensor by its scale)
    estimator: Estimator = "projected"
    perturbations: int = 1  # m
    momentum: float = 0.0
    train: Trainable = "all"
    sparsity: float = 0.0
    seed: int = 0

    def validate(self, integer: bool) -> None:
        if self.estimator not in ("projected", "sign"):
            raise ConfigError(f"estimator must be projected or sign, got '{self.estimator}'")
        if self.train not in ("all", "last_layer", "biases"):
            raise ConfigError(f"train must be all, last_layer or biases, got '{self.train}'")
        if self.perturbations < 1:
            raise ConfigError("perturbations (m) must be >= 1")
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError("sparsity must be in [0, 1)")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("momentum must be in [0, 1)")
        if self.eps <= 0 or (integer and (self.eps != int(self.eps) or self.eps > GUARD)):
            raise ConfigError(f"eps must be an integer in [1, {GUARD}] for QZO-FF, > 0 for fp32")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")


def _trainable(n_layers: int, train: Trainable) -> list[bool]:
    """Per tensor (W_1, b_1, W_2, ...): does it train?"""
    flags = []
    for layer in range(n_layers):
        for is_bias in (False, True):
            last = layer == n_layers - 1
            flags.append(train == "all" or (train == "biases" and is_bias) or (train == "last_layer" and last))
    return flags


class QzoFfTrainer:
    """QZO-FF on a QuantizedMLP, in place (the model's integer tensors change)."""

    def __init__(self, model: QuantizedMLP, scale: FloatArray, config: ForwardGradientConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg = config or ForwardGradientConfig()
        cfg.validate(integer=True)
        self.eps = int(cfg.eps)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.flags = _trainable(len(model.w), cfg.train)
        self.velocity: list[np.ndarray] | None = (
            [np.zeros(t.shape, dtype=np.float32) for t in model.tensors()] if cfg.momentum > 0 else None
        )
        self.steps = 0
        self.forward_passes = 0

    def loss(self, batch: Batch) -> float:
        return normalized_mse(self.model.forward_int(batch.x, batch.u), batch.target, self.scale)

    def _z(self, seed: tuple[int, ...], index: int, shape: tuple[int, ...]) -> np.ndarray:
        """The perturbation of tensor `index` for `seed`: its own generator, so any tensor's z can be
        regenerated alone and only one tensor's z exists at a time."""
        rng = np.random.default_rng([*seed, index])
        z = rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1
        if self.cfg.sparsity > 0:
            z = z * (rng.random(shape) < 1.0 - self.cfg.sparsity).astype(np.int8)
        return z

    def _perturb(self, seed: tuple[int, ...], factor: int) -> None:
        """w += factor * z for the perturbation of `seed`, tensor by tensor."""
        for i, (t, trains) in enumerate(zip(self.model.tensors(), self.flags, strict=True)):
            if trains:
                t += self._z(seed, i, t.shape).astype(np.int16) * np.int16(factor)

    def step(self, batch: Batch) -> float:
        cfg, eps = self.cfg, self.eps
        coeffs: list[float] = []
        seeds = [(cfg.seed, self.steps, j) for j in range(cfg.perturbations)]
        losses = []
        for seed in seeds:
            self._perturb(seed, +eps)
            l_plus = self.loss(batch)
            self._perturb(seed, -2 * eps)
            l_minus = self.loss(batch)
            self._perturb(seed, +eps)  # exactly restored: no entry saturated
            self.forward_passes += 2
            diff = l_plus - l_minus
            coeffs.append(diff / (2 * eps) if cfg.estimator == "projected" else float(np.sign(diff)))
            losses.append(0.5 * (l_plus + l_minus))
        if not np.all(np.isfinite(coeffs)):  # a loss overflowed: no usable estimate, weights unchanged
            self.steps += 1
            return float(np.mean(losses))
        power = 2 if cfg.estimator == "projected" else 1
        scales = self.model.scales()
        for i, (t, trains) in enumerate(zip(self.model.tensors(), self.flags, strict=True)):
            if not trains:
                continue
            g = np.zeros(t.shape, dtype=np.float32)  # one tensor's update at a time
            for coeff, seed in zip(coeffs, seeds, strict=True):
                g += np.float32(coeff / len(seeds) / scales[i] ** power) * self._z(seed, i, t.shape)
            if self.velocity is not None:
                self.velocity[i] = (cfg.momentum * self.velocity[i] + g).astype(np.float32)
                g = self.velocity[i]
            rng = np.random.default_rng([cfg.seed, self.steps, 1_000_003, i])  # stochastic rounding
            # Clipped before the cast: a step beyond the int16 range saturates anyway, and a float
            # beyond int32 would wrap.
            raw = np.clip(-cfg.lr * g + rng.random(t.shape, dtype=np.float32), -2.0 * W_LIMIT, 2.0 * W_LIMIT)
            step = np.floor(raw).astype(np.int32)
            t[...] = np.clip(t.astype(np.int32) + step, -W_LIMIT, W_LIMIT).astype(np.int16)
        self.steps += 1
        return float(np.mean(losses))


class Fp32ForwardGradient:
    """The same estimator in float32 (float weights, float activations): the precision baseline."""

    def __init__(self, spec: ResidualSpec, theta: FloatArray, scale: FloatArray,
                 config: ForwardGradientConfig | None = None) -> None:
        self.spec = spec
        self.cfg = cfg = config or ForwardGradientConfig(eps=1e-3)
        cfg.validate(integer=False)
        self.theta = np.asarray(theta, dtype=np.float32).copy()
        self.scale = np.asarray(scale, dtype=np.float64)
        sizes = [o * i + o for o, i in spec.shapes]
        flags = _trainable(len(spec.shapes), cfg.train)
        mask = []
        for (o, i), (fw, fb) in zip(spec.shapes, zip(flags[0::2], flags[1::2], strict=True), strict=True):
            mask += [fw] * (o * i) + [fb] * o
        self.mask = np.array(mask, dtype=bool)
        assert sum(sizes) == self.mask.size
        self.velocity = np.zeros_like(self.theta) if cfg.momentum > 0 else None
        self.steps = 0
        self.forward_passes = 0

    def loss(self, batch: Batch, theta: FloatArray | None = None) -> float:
        w = self.theta if theta is None else theta
        return normalized_mse(self.spec.evaluate(batch.x, batch.u, w.astype(np.float64)), batch.target, self.scale)

    def step(self, batch: Batch) -> float:
        cfg = self.cfg
        eps = np.float32(cfg.eps)
        grad = np.zeros_like(self.theta)
        losses = []
        for j in range(cfg.perturbations):
            rng = np.random.default_rng([cfg.seed, self.steps, j])
            z = (rng.integers(0, 2, size=self.theta.size) * 2 - 1).astype(np.float32) * self.mask
            if cfg.sparsity > 0:
                z *= rng.random(self.theta.size) < 1.0 - cfg.sparsity
            l_plus = self.loss(batch, self.theta + eps * z)
            l_minus = self.loss(batch, self.theta - eps * z)
            self.forward_passes += 2
            diff = l_plus - l_minus
            coeff = diff / (2 * float(eps)) if cfg.estimator == "projected" else float(np.sign(diff))
            grad += np.float32(coeff / cfg.perturbations) * z
            losses.append(0.5 * (l_plus + l_minus))
        if self.velocity is not None:
            self.velocity = np.float32(cfg.momentum) * self.velocity + grad
            grad = self.velocity
        self.theta -= np.float32(cfg.lr) * grad
        self.steps += 1
        return float(np.mean(losses))


class Backprop:
    """Backpropagation with torch autograd (Adam), the accuracy and memory reference."""

    def __init__(self, spec: ResidualSpec, theta: FloatArray, scale: FloatArray, lr: float = 1e-3,
                 seed: int = 0, threads: int | None = None, activation_scales: list[float] | None = None) -> None:
        """`threads` sets torch's intra-op threads for the whole process (torch has no per-object
        setting); None leaves torch's default, one per core. `activation_scales` (one per layer
        input, as QuantizedMLP.a_scale) makes the forward pass round every activation to int8 at
        those scales, with a straight-through gradient: quantization-aware training, backprop's
        best in the 16w8a format (the 16-bit weights' rounding is negligible beside the 8-bit
        activations' and is left out)."""
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        self.spec = spec
        self.scale = torch.tensor(np.asarray(scale), dtype=torch.float32)
        self.in_gain = torch.tensor(spec.in_gain, dtype=torch.float32)
        self.out_gain = torch.tensor(spec.out_gain, dtype=torch.float32)
        self.params = [
            torch.tensor(a, dtype=torch.float32, requires_grad=True)
            for w, b in spec.unpack(theta)
            for a in (w, b)
        ]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.a_scale = None if activation_scales is None else [float(v) for v in activation_scales]
        self.steps = 0
        self.forward_passes = 0

    def _int8(self, h: Any, scale: float, low: int) -> Any:
        """h rounded to the int8 grid of `scale` (saturated to [low, 127]); gradient passed straight."""
        q = self.torch.clamp(self.torch.round(h / scale), low, A_MAX) * scale
        return h + (q - h).detach()

    def _forward(self, batch: Batch) -> object:
        torch = self.torch
        h = torch.tensor(np.concatenate([batch.x, batch.u], axis=1), dtype=torch.float32) * self.in_gain
        if self.a_scale is not None:
            h = self._int8(h, self.a_scale[0], -A_MAX)
        n = len(self.params) // 2
        for i in range(n):
            h = h @ self.params[2 * i].T + self.params[2 * i + 1]
            if i < n - 1:
                h = torch.relu(h) if self.spec.activation == "relu" else torch.tanh(h)
                if self.a_scale is not None:
                    h = self._int8(h, self.a_scale[i + 1], 0 if self.spec.activation == "relu" else -A_MAX)
        return h * self.out_gain

    def _loss(self, batch: Batch) -> object:
        target = self.torch.tensor(batch.target, dtype=self.torch.float32)
        return (((self._forward(batch) - target) / self.scale) ** 2).mean()  # type: ignore[operator]

    def loss(self, batch: Batch) -> float:
        with self.torch.no_grad():
            return float(self._loss(batch))  # type: ignore[arg-type]

    def step(self, batch: Batch) -> float:
        self.opt.zero_grad()
        loss = self._loss(batch)
        loss.backward()  # type: ignore[attr-defined]
        self.opt.step()
        self.steps += 1
        self.forward_passes += 1
        return float(loss.detach())  # type: ignore[attr-defined]

    @property
    def theta(self) -> FloatArray:
        return np.concatenate([p.detach().numpy().reshape(-1) for p in self.params]).astype(np.float64)
