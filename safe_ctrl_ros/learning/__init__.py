"""On-board learning of the residual: 16w8a fixed-point MLP, QZO-FF, and the baselines."""

from safe_ctrl_ros.learning.data import Batch, normalized_mse, residual_targets
from safe_ctrl_ros.learning.fixed_point import QuantizedMLP
from safe_ctrl_ros.learning.trainers import Backprop, ForwardGradientConfig, Fp32ForwardGradient, QzoFfTrainer

__all__ = [
    "Backprop",
    "Batch",
    "ForwardGradientConfig",
    "Fp32ForwardGradient",
    "QuantizedMLP",
    "QzoFfTrainer",
    "normalized_mse",
    "residual_targets",
]
