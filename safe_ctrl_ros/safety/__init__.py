"""Safety: constraint evaluation shared by the monitor, the controller and bag analysis."""

from safe_ctrl_ros.safety.constraints import (
    Constraint,
    ConstraintSet,
    Evaluation,
    load_constraints,
    make_constraints,
)

__all__ = ["Constraint", "ConstraintSet", "Evaluation", "load_constraints", "make_constraints"]
