#!/usr/bin/env bash
# The benchmark: builds meshaudit and the reference filters, then runs every variant
# side by side in one run, under HTTP/1.1 (wrk) and HTTP/2 (h2load), and writes
# bench/RESULTS.md (see bench/run.py for what tunes it). Not part of the test run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cargo build --release --target wasm32-wasip1 --manifest-path bench/filters/Cargo.toml
cargo build --release --example core_bench
cargo build --release --example core_bench --target wasm32-wasip1
python3 bench/run.py
