"""Controllers: LQR (and, later, NMPC with a learned residual)."""

from safe_ctrl_ros.control.lqr import LqrController, lqr_gain

__all__ = ["LqrController", "lqr_gain"]
