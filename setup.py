"""pip install . : the ROS-free core and command-line tools (ROS nodes need rclpy at run time).

The node console scripts are derived from safe_ctrl_ros/nodes/*.py, the same list CMakeLists.txt
installs into lib/safe_ctrl_ros for `ros2 run`.
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def node_names() -> list[str]:
    return sorted(p.stem for p in (HERE / "safe_ctrl_ros" / "nodes").glob("*.py") if not p.stem.startswith("_"))


# Command-line tools that work without ROS (bringup needs rclpy only to compose nodes in-process).
TOOLS = [
    "safe-ctrl-bringup = safe_ctrl_ros.bringup.cli:main",
    "safe-ctrl-pretrain = safe_ctrl_ros.learning.pretrain:main",
    "safe-ctrl-report = safe_ctrl_ros.bag.report:main",
    "safe-ctrl-replay = safe_ctrl_ros.bag.replay:main",
    "safe-ctrl-flagship = safe_ctrl_ros.bringup.flagship:main",
    "safe-ctrl-retrain = safe_ctrl_ros.bag.retrain:main",
    "safe-ctrl-sweep = safe_ctrl_ros.sweep.cli:main",
    "safe-ctrl-render = safe_ctrl_ros.simulation.mujoco.render:main",
]


def node_console_scripts() -> list[str]:
    return [
        f"safe-ctrl-{name.replace('_', '-')} = safe_ctrl_ros.nodes.{name}:main" for name in node_names()
    ]


setup(entry_points={"console_scripts": TOOLS + node_console_scripts()})
