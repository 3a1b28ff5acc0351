#!/usr/bin/env bash
# Builds the plugin: target/meshaudit.wasm, the artifact every test, the demo, the
# benchmark and the OCI image use.
#
# cargo's output (opt-level 2, Cargo.toml) goes through binaryen's wasm-opt -Oz (version 132,
# which scripts/setup.sh installs into .tools/): 12.6 KB fewer than opt-level 3 and -O3 for
# about 1% more instructions per request (measured side by side in Envoy, bench/README.md,
# "Module size"), which keeps the module under its 400 KiB budget. The features are those
# rustc enables for wasm32-wasip1; V8 has them all. --low-memory-unused holds for rustc's
# layout: the stack comes first and grows down from 1 MiB toward 0, data sits above it, so
# addresses below 1024 are reached only by a stack that is all but exhausted.
#
# The module exports only the callbacks the plugin implements (src/filter/dispatch.rs):
# proxy-wasm-cpp-host, Envoy's Wasm host, checks each callback before calling it and treats
# a missing one as not implemented; every real-Envoy test runs this module.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.tools/node_modules/.bin
[ -x "$bin/wasm-opt" ] || { echo "build.sh: $bin/wasm-opt missing; run scripts/setup.sh demo" >&2; exit 1; }
features=(--enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int
  --enable-mutable-globals --enable-multivalue --enable-reference-types)
cargo build --release --target wasm32-wasip1
"$bin/wasm-opt" -Oz --converge --low-memory-unused "${features[@]}" \
  target/wasm32-wasip1/release/meshaudit.wasm -o target/meshaudit.wasm
