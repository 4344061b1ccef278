"""The `main()` shared by every node: params-file checks, init, spin, clean shutdown.

Configuration errors (bad params file, unknown system, wrong vector size) stop the node with exit
code 2 and a one-line message naming the problem, instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.ros.params import check_params_files

RCLError = _rclpy.RCLError
EXIT_CONFIG_ERROR = 2
SPIN_PERIOD_S = 0.2


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
        threads = int(getattr(node, "executor_threads", 1))
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        done = getattr(node, "done", None)
        # Spin with a bounded wait: a shutdown by signal is noticed within SPIN_PERIOD_S even when
        # the executor's wake-up is missed (seen with Fast DDS when a peer leaves during SIGTERM).
        while rclpy.ok() and not (done is not None and done.done()):
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        if done is not None and done.done():
            code = int(done.result() or 0)
    except ConfigError as exc:
        print(f"[{name}] configuration error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_CONFIG_ERROR
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():
            raise  # a real error; during a shutdown by signal a publish may find its context gone
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
