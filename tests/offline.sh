#!/usr/bin/env bash
# Run a command in a new network namespace where only loopback is up, so the tests' servers
# (Ray, PostgreSQL, the HTTP service) can reach nothing but 127.0.0.1. Needs root (as in CI);
# elsewhere it says so and runs the command with the machine's network.
set -euo pipefail
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' bash "$@"
fi
echo "tests/offline.sh: cannot create a network namespace (not root?); running with the network" >&2
exec "$@"
