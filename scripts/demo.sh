#!/usr/bin/env bash
# Builds the plugin and the command, starts two Envoy 1.40 sidecars with meshaudit (mTLS) on
# loopback, sends sample traffic, prints the audit records Envoy logged and the trail's
# answers (meshaudit summary, report, policy impact and, after a learning window, suggest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
bash scripts/build.sh
cargo build --quiet --features cli --bin meshaudit
python3 e2e/demo.py "$@"
