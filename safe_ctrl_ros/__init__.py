"""safe_ctrl_ros: safe learning-based control as a ROS 2 graph.

The core subpackages (systems, control, ...) import neither rclpy nor generated messages, so
`pip install .` is enough to use them. After a colcon build the package also holds the generated
interfaces (`safe_ctrl_ros.msg`); `extend_path` lets a source checkout on sys.path find them in the
install tree as well, and a `--symlink-install` tree finds modules added to the sources since the
build (its __init__.py is a link into the source tree, whose folder is searched first).
"""

import os
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
_source_dir = os.path.dirname(os.path.realpath(__file__))
if _source_dir not in __path__:
    __path__.insert(0, _source_dir)

__version__ = "0.1.0"
