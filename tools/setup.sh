#!/usr/bin/env bash
# make setup: create .venv, install pinned dependencies, build the package with colcon.
# Idempotent: dependencies are reinstalled only when requirements/ changes; colcon builds
# incrementally. With a sourced ROS 2 distribution (ROS_DISTRO set) its rclpy and build tools are
# used instead of the wheels.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

if [ -n "${ROS_DISTRO:-}" ]; then
  flavour="distro-$ROS_DISTRO"
  reqs=(requirements/python.txt)
else
  flavour="wheels"
  reqs=(requirements/python.txt requirements/ros-wheels.txt)
fi
# The node list is part of the key: each node module is a console script of the editable install.
want="$flavour $( (cat "${reqs[@]}" requirements/runtime.txt requirements/constraints.txt setup.py setup.cfg; ls safe_ctrl_ros/nodes) | sha256sum | cut -d' ' -f1)"
stamp="$venv/.safe-ctrl-deps"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  if [ -n "${ROS_DISTRO:-}" ]; then
    "$py" -m venv --system-site-packages "$venv"
  else
    "$py" -m venv "$venv"
  fi
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned dependencies ($flavour)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" -c requirements/constraints.txt
  if [ -z "${ROS_DISTRO:-}" ]; then
    "$venv/bin/python" tools/fix_wheel_cmake.py "$venv"
  fi
  # The package itself, editable: console scripts (safe-ctrl-*) in .venv/bin, sources from here.
  mkdir -p "$root/log"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
      >"$root/log/setup-pip-editable.log" 2>&1; then
    cat "$root/log/setup-pip-editable.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# Build msg/ and install the package (install/safe_ctrl_ros) with colcon.
export PATH="$venv/bin:$PATH"
if [ -z "${ROS_DISTRO:-}" ]; then
  export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
log="$root/log/setup-colcon.log"
mkdir -p "$root/log"
if ! colcon build --symlink-install --base-paths "$root" --build-base "$root/build" --install-base "$root/install" \
    --event-handlers console_direct- --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" \
    -DBUILD_TESTING=OFF >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: colcon build failed (log above, also in $log)" >&2
  exit 1
fi
echo "setup: ok ($flavour; package built into install/)"
