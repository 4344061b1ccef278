"""safe-ctrl-bringup: run a ROS 2 XML launch file where `ros2 launch` is not available.

    safe-ctrl-bringup launch/cartpole_lqr.launch.xml [name:=value ...] [--composed] [--show]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from safe_ctrl_ros.bringup.launch_xml import LaunchFileError, parse_launch_file
from safe_ctrl_ros.bringup.runner import ProcessRunner, node_command, run_composed
from safe_ctrl_ros.errors import ConfigError


def _launch_args(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise LaunchFileError(f"launch arguments are written name:=value, got '{item}'")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="safe-ctrl-bringup", description=__doc__.splitlines()[0])
    parser.add_argument("launch_file")
    parser.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    parser.add_argument("--composed", action="store_true", help="run all nodes in one process")
    parser.add_argument("--show", action="store_true", help="print the resolved plan and exit")
    parser.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    opts = parser.parse_intermixed_args(argv)
    try:
        plan = parse_launch_file(opts.launch_file, _launch_args(opts.arguments))
        for warning in plan.warnings:
            print(f"safe-ctrl-bringup: warning: {warning}", file=sys.stderr)
        if opts.show_args:
            for name, desc in plan.descriptions.items():
                print(f"{name} (default: '{plan.arguments.get(name, '')}'): {desc or ''}")
            return 0
        with tempfile.TemporaryDirectory(prefix="safe_ctrl_bringup_") as tmp:
            params_dir = Path(tmp)
            if opts.show:
                for i, spec in enumerate(plan.nodes):
                    flags = " [on_exit=shutdown]" if spec.on_exit_shutdown else ""
                    cmd = node_command(spec, spec.write_inline_params(params_dir, i))
                    print(f"{spec.label}{flags}: {shlex.join(cmd)}")
                    if spec.params:
                        print(f"  inline params: {spec.inline_params()['/**']['ros__parameters']}")
                return 0
            print(f"[bringup] {plan.file.name}: {len(plan.nodes)} node(s), "
                  f"{'composed in one process' if opts.composed else 'one process each'}", flush=True)
            return run_composed(plan, params_dir) if opts.composed else ProcessRunner(plan, params_dir).run()
    except ConfigError as exc:
        print(f"safe-ctrl-bringup: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
