#!/usr/bin/env bash
# Builds the plugin: target/meshaudit.wasm, the artifact every test, the demo, the
# benchmark and the OCI image use.
#
# cargo's output (opt-level 2, Cargo.toml) goes through binaryen's wasm-opt -Oz: 12.6 KB fewer
# than opt-level 3 and -O3 for about 1% more instructions per request (measured side by
# side in Envoy, bench/README.md, "Module size"), which keeps the module under its 400 KiB
# budget. The features are those rustc enables for wasm32-wasip1; V8 has them all.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-wasip1
wasm-opt -Oz \
  --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-mutable-globals --enable-multivalue --enable-reference-types \
  target/wasm32-wasip1/release/meshaudit.wasm -o target/meshaudit.wasm
