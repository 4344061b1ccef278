"""Controllers: LQR, and nonlinear MPC with a learned residual; the fallback policy."""

from safe_ctrl_ros.control.lqr import LqrController, lqr_gain
from safe_ctrl_ros.control.nmpc import SOLVERS, Nmpc, NmpcConfig, NmpcResult
from safe_ctrl_ros.control.residual import ResidualSpec

__all__ = ["SOLVERS", "LqrController", "Nmpc", "NmpcConfig", "NmpcResult", "ResidualSpec", "lqr_gain"]
