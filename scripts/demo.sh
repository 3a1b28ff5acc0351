#!/usr/bin/env bash
# Builds the plugin, starts Envoy 1.40 + meshaudit + a local upstream on
# loopback, sends sample traffic and prints the audit records Envoy logged.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
bash scripts/build.sh
python3 e2e/demo.py "$@"
