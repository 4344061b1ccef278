"""safe_ctrl_ros: safe learning-based control as a ROS 2 graph.

The core subpackages (systems, control, ...) import neither rclpy nor generated messages, so
`pip install .` is enough to use them. After a colcon build the package also holds the generated
interfaces (`safe_ctrl_ros.msg`); `extend_path` lets a source checkout on sys.path find them in the
install tree as well.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
