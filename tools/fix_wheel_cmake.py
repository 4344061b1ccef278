"""Point the ROS 2 wheels' CMake files at this environment's Python (see docs/INSTALL.md).

The Kilted wheels were built under /opt/python/cp311-cp311 and a few of their CMake config files
name that machine's include directories, which CMake rejects ("includes non-existent path"). This
rewrites those two prefixes, only inside the given prefix (the project's virtual environment).
Idempotent: running it again changes nothing.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_PY_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILD_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def main() -> int:
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix).resolve()
    import numpy

    replacements = {
        BUILD_NUMPY_INCLUDE: numpy.get_include(),
        BUILD_PY_INCLUDE: sysconfig.get_paths()["include"],
    }
    changed = 0
    for path in (prefix / "share").glob("*/cmake/*.cmake"):
        text = path.read_text()
        new = text
        for old, repl in replacements.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"fix_wheel_cmake: rewrote {changed} CMake file(s) under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
