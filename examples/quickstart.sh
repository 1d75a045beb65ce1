#!/usr/bin/env bash
# quickstart.sh -- the main job on one machine: builds cs-pdns, starts MariaDB + PowerDNS + a Kafka
# broker + the CloudStack simulator, runs cs-pdns, creates VMs and shows dig answering.
# Usage (Debian 12, as root): examples/quickstart.sh [--keep]   (--keep leaves the stack running)
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
exec python3 examples/quickstart.py "$@"
