#!/usr/bin/env bash
# Builds the plugin: target/meshaudit.wasm, the artifact every test, the demo, the
# benchmark and the OCI image use.
#
# cargo's output goes through binaryen's wasm-opt -O3: the same speed in fewer bytes than
# LLVM alone (measured side by side, bench/README.md), which keeps the module under its
# 400 KiB budget. The features are those rustc enables for wasm32-wasip1; V8 has them all.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --target wasm32-wasip1
wasm-opt -O3 \
  --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-mutable-globals --enable-multivalue --enable-reference-types \
  target/wasm32-wasip1/release/meshaudit.wasm -o target/meshaudit.wasm
