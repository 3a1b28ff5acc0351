#!/usr/bin/env bash
# The benchmark: builds meshaudit and the reference filters, then runs every variant
# side by side in one run (see bench/run.py) and writes bench/RESULTS.md.
# Not part of the test run. ROUNDS, DURATION, CONNECTIONS and OUT tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cargo build --release --target wasm32-wasip1 --manifest-path bench/filters/Cargo.toml
cargo build --release --example core_bench
cargo build --release --example core_bench --target wasm32-wasip1
python3 bench/run.py
