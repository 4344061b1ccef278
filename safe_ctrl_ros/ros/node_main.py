"""The `main()` shared by every node: params-file checks, init, spin, clean shutdown.

Configuration errors (bad params file, unknown system, wrong vector size) stop the node with exit
code 2 and a one-line message naming the problem, instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.ros.params import check_params_files

RCLError = _rclpy.RCLError
EXIT_CONFIG_ERROR = 2


def run_node(factory: Callable[[], Node], name: str, args: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if args is None else args)
    try:
        check_params_files(argv)
    except ConfigError as exc:
        print(f"[{name}] configuration error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR
    try:
        rclpy.init(args=argv)
    except RCLError as exc:
        print(f"[{name}] invalid ROS arguments: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR
    node: Node | None = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        done = getattr(node, "done", None)
        if done is not None:
            executor.spin_until_future_complete(done)
            code = int(done.result() or 0) if done.done() else 0
        else:
            executor.spin()
    except ConfigError as exc:
        print(f"[{name}] configuration error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_CONFIG_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
