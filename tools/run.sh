#!/usr/bin/env bash
# Run a command in the project's environment: the venv, the built package, DDS kept on this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
  set +u; source "/opt/ros/$ROS_DISTRO/setup.bash"; set -u
else
  export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
set +u; source "$root/install/setup.bash"; set -u
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Keep DDS discovery on this machine unless the user deploys across machines (docs/DEPLOYMENT.md).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONUNBUFFERED=1
exec "$@"
