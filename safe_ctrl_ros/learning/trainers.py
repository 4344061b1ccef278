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
  +-(32767 - GUARD). Which tensors train: all, the last layer, the biases, the first layer
  (`first_layer`: W_1, b_1) or the first and the last (`first_last`); `sparsity` leaves that
  fraction of entries unperturbed (a seeded mask per step).

Options (issue #18's enhancements; each measured in bench/adapter_accuracy.py --ablation, the
figures in docs/LEARNING.md):
  distribution  "rademacher" (z in {-1, +1}) or "gaussian": z = round(N(0, 1)) clipped to
                +-(GUARD // eps) (a quantized Gaussian, integer-valued), the estimate divided by
                E[z^2] of that distribution so it stays unbiased.
  guidance      momentum-guided sampling: each entry of z follows the sign of the running estimate
                (an exponential average of g, GUIDE_BETA) with this probability, else the
                distribution's draw; perturbations are drawn around the running gradient direction.
  sparse_by     "random" (a seeded mask per step), or by magnitude: "large" perturbs only the
                (1 - sparsity) largest |w| of each tensor, "small" only the smallest (the masks are
                computed once per step from the weights before any perturbation).
  normalize     "kernel": each output row of a weight matrix steps in proportion to the row's own
                weight RMS over the tensor's (a per-kernel trust ratio); "tensor": ZO-Adam-style,
                the estimate divided by the root of a running (bias-corrected, ADAM_BETA2) mean of
                its square, one scalar per tensor (with Rademacher z every entry of a tensor has the
                same second moment, so per-tensor is all a zeroth-order estimate can give), `lr`
                then a float-space step per entry as Adam's.
  sharpness     sharpness-aware perturbation (a zeroth-order SAM): rho integer units; the step's
                two-point estimate is taken at the neighbourhood point w + rho sign(g_prev), g_prev
                the previous step's estimate, and the update is applied to w. g_prev is never
                stored: it is sum_j d_j z_j of the previous step, regenerated from its seeds and its
                m coefficients, so the shift costs one more int8 tensor at a time and is undone
                exactly (rho + eps <= GUARD: nothing saturates). With guidance or magnitude masks the
                regenerated direction uses this step's guide and masks (a direction still, and the
                same for the shift and its undo).
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
Trainable = Literal["all", "last_layer", "biases", "first_layer", "first_last"]
TRAINABLE: tuple[str, ...] = ("all", "last_layer", "biases", "first_layer", "first_last")
Distribution = Literal["rademacher", "gaussian"]
SparseBy = Literal["random", "large", "small"]
Normalize = Literal["none", "kernel", "tensor"]
GUIDE_BETA = 0.9  # the running estimate that guides the sampling (guidance > 0)
ADAM_BETA2 = 0.99  # the per-tensor second moment (normalize "tensor")
ADAM_TINY = 1e-30


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
    # QZO-FF only (the module docstring):
    distribution: Distribution = "rademacher"
    guidance: float = 0.0
    sparse_by: SparseBy = "random"
    normalize: Normalize = "none"
    sharpness: int = 0

    def validate(self, integer: bool) -> None:
        if self.estimator not in ("projected", "sign"):
            raise ConfigError(f"estimator must be projected or sign, got '{self.estimator}'")
        if self.train not in TRAINABLE:
            raise ConfigError(f"train must be one of {', '.join(TRAINABLE)}, got '{self.train}'")
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
        if self.distribution not in ("rademacher", "gaussian"):
            raise ConfigError(f"distribution must be rademacher or gaussian, got '{self.distribution}'")
        if self.sparse_by not in ("random", "large", "small"):
            raise ConfigError(f"sparse_by must be random, large or small, got '{self.sparse_by}'")
        if self.normalize not in ("none", "kernel", "tensor"):
            raise ConfigError(f"normalize must be none, kernel or tensor, got '{self.normalize}'")
        if not 0.0 <= self.guidance < 1.0:
            raise ConfigError("guidance must be in [0, 1)")
        if self.sharpness != int(self.sharpness) or self.sharpness < 0:
            raise ConfigError(f"sharpness must be a whole number of integer units >= 0, got {self.sharpness}")
        if integer and self.sharpness + self.eps > GUARD:
            raise ConfigError(f"sharpness + eps must be <= {GUARD} integer units (the guard), got "
                              f"{self.sharpness} + {self.eps:g}")
        options = (self.distribution, self.guidance, self.sparse_by, self.normalize, self.sharpness)
        plain = options == ("rademacher", 0.0, "random", "none", 0)
        if not integer and not plain:
            raise ConfigError("distribution, guidance, sparse_by, normalize and sharpness are options of QZO-FF only")
        if integer and self.distribution == "gaussian" and GUARD // int(self.eps) < 1:
            raise ConfigError("a quantized Gaussian needs eps <= GUARD")


def _trainable(n_layers: int, train: Trainable) -> list[bool]:
    """Per tensor (W_1, b_1, W_2, ...): does it train?"""
    flags = []
    for layer in range(n_layers):
        first, last = layer == 0, layer == n_layers - 1
        chosen = {"all": True, "last_layer": last, "first_layer": first, "first_last": first or last}
        for is_bias in (False, True):
            flags.append(is_bias if train == "biases" else chosen[train])
    return flags


def gaussian_second_moment(limit: int) -> float:
    """E[z^2] of z = round(N(0, 1)) clipped to +-limit (exact to float64)."""
    from math import erf, sqrt

    def cdf(v: float) -> float:
        return 0.5 * (1.0 + erf(v / sqrt(2.0)))

    total = 0.0
    for k in range(1, limit + 1):
        upper = 1.0 if k == limit else cdf(k + 0.5)  # the clipped tail lands on +-limit
        total += 2.0 * k * k * (upper - cdf(k - 0.5))
    return total


UPDATE_BLOCK = 256  # entries per block of the in-place update (whole rows; at least one row)


def _blocks(t: np.ndarray) -> list[slice]:
    """Slices of whole rows (first axis) of about UPDATE_BLOCK entries each, in order."""
    per_row = int(np.prod(t.shape[1:], dtype=np.int64)) if t.ndim > 1 else 1
    step = max(1, UPDATE_BLOCK // max(per_row, 1))
    return [slice(r, min(r + step, t.shape[0])) for r in range(0, t.shape[0], step)]


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
        self.z_limit = GUARD // self.eps  # a Gaussian z stays within +-GUARD integer units
        self.z_moment = gaussian_second_moment(self.z_limit) if cfg.distribution == "gaussian" else 1.0
        self.guide: list[np.ndarray] | None = (
            [np.zeros(t.shape, dtype=np.float32) for t in model.tensors()] if cfg.guidance > 0 else None
        )
        self.second_moment = [0.0] * len(self.flags)  # normalize "tensor": one scalar per tensor
        self.masks: list[np.ndarray | None] = [None] * len(self.flags)  # sparse_by large/small, this step's
        # sharpness > 0: the previous step's perturbation seeds and coefficients (m floats), from
        # which its estimate's sign is regenerated
        self.previous: tuple[list[tuple[int, ...]], list[float]] | None = None
        self.steps = 0
        self.forward_passes = 0

    def loss(self, batch: Batch) -> float:
        return normalized_mse(self.model.forward_int(batch.x, batch.u), batch.target, self.scale)

    def _tensor(self, i: int) -> np.ndarray:
        """Tensor i of W_1, b_1, W_2, ... (the model's own array)."""
        return self.model.w[i // 2] if i % 2 == 0 else self.model.b[i // 2]

    def _scale(self, i: int) -> float:
        return float(self.model.w_scale[i // 2] if i % 2 == 0 else self.model.b_scale[i // 2])

    def _z(self, seed: tuple[int, ...], index: int, shape: tuple[int, ...]) -> np.ndarray:
        """The perturbation of tensor `index` for `seed`: its own generator, so any tensor's z can be
        regenerated alone and only one tensor's z exists at a time."""
        cfg = self.cfg
        rng = np.random.default_rng([*seed, index])
        if cfg.distribution == "rademacher":
            z = rng.integers(0, 2, size=shape, dtype=np.int8)
            z *= 2  # in place: the perturbation is the only whole-tensor array
            z -= 1
        else:
            normal = rng.standard_normal(shape, dtype=np.float32)
            z = np.clip(np.rint(normal), -self.z_limit, self.z_limit).astype(np.int8)
        if self.guide is not None:
            follow = rng.random(shape, dtype=np.float32) < cfg.guidance
            direction = np.sign(self.guide[index]).astype(np.int8)
            z = np.where(follow & (direction != 0), direction * np.maximum(np.abs(z), 1).astype(np.int8), z)
        if cfg.sparsity > 0:
            mask = self.masks[index]
            if mask is None:  # drawn in blocks: the same stream as one draw, without a float64 tensor
                for rows in _blocks(z):
                    z[rows] *= rng.random(z[rows].shape) < 1.0 - cfg.sparsity
            else:
                z *= mask
        return z

    def _magnitude_masks(self) -> None:
        """sparse_by large/small: this step's masks, from the weights before any perturbation."""
        cfg = self.cfg
        for i in range(len(self.flags)):
            if not self.flags[i]:
                continue
            t = self._tensor(i)
            mag = np.abs(t.astype(np.int32)).reshape(-1)
            keep = max(1, round((1.0 - cfg.sparsity) * mag.size))
            order = np.argsort(-mag if cfg.sparse_by == "large" else mag, kind="stable")
            mask = np.zeros(mag.size, dtype=np.int8)
            mask[order[:keep]] = 1
            self.masks[i] = mask.reshape(t.shape)

    def _perturb(self, seed: tuple[int, ...], factor: int) -> None:
        """w += factor * z for the perturbation of `seed`, tensor by tensor."""
        for i in range(len(self.flags)):  # by index: no per-tensor list exists during a step
            if self.flags[i]:
                t = self._tensor(i)
                z = self._z(seed, i, t.shape)
                for rows in _blocks(t):  # in place, a block at a time
                    t[rows] += z[rows].astype(np.int16) * np.int16(factor)

    def _ascend(self, factor: int) -> None:
        """sharpness: w += factor * sign(previous estimate), tensor by tensor, a block at a time."""
        assert self.previous is not None
        seeds, coeffs = self.previous
        for i in range(len(self.flags)):
            if not self.flags[i]:
                continue
            t = self._tensor(i)
            zs = [self._z(seed, i, t.shape) for seed in seeds]
            for rows in _blocks(t):
                g = np.zeros(t[rows].shape, dtype=np.float32)
                for coeff, z in zip(coeffs, zs, strict=True):
                    g += np.float32(coeff) * z[rows]
                t[rows] += np.sign(g).astype(np.int16) * np.int16(factor)

    def step(self, batch: Batch) -> float:
        cfg, eps = self.cfg, self.eps
        if cfg.sparsity > 0 and cfg.sparse_by != "random":
            self._magnitude_masks()
        coeffs: list[float] = []
        seeds: list[tuple[int, ...]] = [(cfg.seed, self.steps, j) for j in range(cfg.perturbations)]
        losses = []
        shifted = cfg.sharpness > 0 and self.previous is not None
        if shifted:  # the neighbourhood point, uphill along the previous estimate
            self._ascend(+cfg.sharpness)
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
        if shifted:
            self._ascend(-cfg.sharpness)  # back to w exactly: no entry saturated
        if not np.all(np.isfinite(coeffs)):  # a loss overflowed: no usable estimate, weights unchanged
            self.steps += 1
            self.previous = None
            return float(np.mean(losses))
        if cfg.sharpness > 0:
            self.previous = (seeds, coeffs)
        power = 2 if cfg.estimator == "projected" else 1
        for i in range(len(self.flags)):
            if not self.flags[i]:
                continue
            t, scale = self._tensor(i), self._scale(i)
            factors = [np.float32(coeff / len(seeds) / scale**power / self.z_moment) for coeff in coeffs]
            rng = np.random.default_rng([cfg.seed, self.steps, 1_000_003, i])  # stochastic rounding
            if cfg.normalize == "tensor":  # needs the whole tensor's estimate for its mean square
                g = np.zeros(t.shape, dtype=np.float32)
                for factor, seed in zip(factors, seeds, strict=True):
                    g += factor * self._z(seed, i, t.shape)
                self._update(i, t, g, slice(None), rng, scale, None)
                continue
            # In place, a block of rows at a time: beyond the perturbation (int8, regenerated once
            # per tensor) only a block's float32 estimate and its temporaries exist.
            zs = [self._z(seed, i, t.shape) for seed in seeds]
            kernel = self._kernel_factors(t) if cfg.normalize == "kernel" else None
            for rows in _blocks(t):
                g = np.zeros(t[rows].shape, dtype=np.float32)
                for factor, z in zip(factors, zs, strict=True):
                    g += factor * z[rows]
                self._update(i, t, g, rows, rng, scale, kernel)
        self.steps += 1
        return float(np.mean(losses))

    def _update(self, i: int, t: np.ndarray, g: np.ndarray, rows: slice, rng: np.random.Generator, scale: float,
                kernel: np.ndarray | None) -> None:
        """t[rows] -= lr * (the estimate g of those rows, after guidance, momentum and normalization),
        in integer units with stochastic rounding (drawn from `rng` in row order)."""
        cfg = self.cfg
        if self.guide is not None:
            guide = self.guide[i][rows]
            guide *= np.float32(GUIDE_BETA)
            guide += np.float32(1.0 - GUIDE_BETA) * g
        if self.velocity is not None:
            self.velocity[i][rows] = cfg.momentum * self.velocity[i][rows] + g
            g = self.velocity[i][rows]
        if kernel is not None:
            g = g * kernel[rows][:, None]
        elif cfg.normalize == "tensor":
            g = self._tensor_normalized(i, g, scale)
        # Clipped before the cast: a step beyond the int16 range saturates anyway, and a float
        # beyond int32 would wrap.
        raw = np.clip(-cfg.lr * g + rng.random(g.shape, dtype=np.float32), -2.0 * W_LIMIT, 2.0 * W_LIMIT)
        step = np.floor(raw).astype(np.int32)
        t[rows] = np.clip(t[rows].astype(np.int32) + step, -W_LIMIT, W_LIMIT).astype(np.int16)

    def _kernel_factors(self, t: np.ndarray) -> np.ndarray | None:
        """normalize "kernel": each output row's weight RMS over the tensor's (None for a bias)."""
        if t.ndim != 2:
            return None
        rows = np.sqrt(np.mean(np.square(t.astype(np.float32)), axis=1))
        whole = float(np.sqrt(np.mean(np.square(rows))))
        return rows / np.float32(whole) if whole > 0 else None

    def _tensor_normalized(self, i: int, g: np.ndarray, scale: float) -> np.ndarray:
        """normalize "tensor" (ZO-Adam per tensor) of tensor `i`'s whole estimate g."""
        beta = ADAM_BETA2
        self.second_moment[i] = beta * self.second_moment[i] + (1.0 - beta) * float(np.mean(np.square(g)))
        corrected = self.second_moment[i] / (1.0 - beta ** (self.steps + 1))
        # Dimensionless (O(1) per entry), then in integer units of a float-space step of lr.
        return g * np.float32(1.0 / ((np.sqrt(corrected) + ADAM_TINY) * scale))


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
