#!/usr/bin/env bash
# Runs every check and test: formatting, lints, the core's unit tests natively and
# compiled to wasm (wasm-bindgen-test under Node), the fuzz targets for a bounded time,
# the plugin build, and the
# end-to-end suite against a real Envoy 1.40 with the built .wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check; ruff format --check and ruff check (Python of e2e/, bench/, scripts/)"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
ruff format --check e2e bench scripts
ruff check e2e bench scripts

step "clippy (native, all targets, with the meshaudit command) and clippy (wasm32-wasip1, the plugin)"
cargo clippy --all-targets --features cli -- -D warnings
cargo clippy --target wasm32-wasip1 -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml -- -D warnings

step "unit tests, native (with the adapter and the meshaudit command)"
cargo test --features cli

step "unit tests of the core alone (proves it builds without the Proxy-Wasm adapter)"
cargo test --no-default-features

step "unit tests of the core compiled to wasm32 (wasm-bindgen-test under Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --no-default-features --target wasm32-unknown-unknown

step "configurations: every shipped one checks with --strict and passes its rule tests"
cargo build --quiet --features cli --bin meshaudit
for config in envoyfilter/wasmplugin-http.yaml envoyfilter/wasmplugin-waypoint.yaml envoyfilter/wasmplugin-learning.yaml \
  envoyfilter/wasmplugin-admin-streams.yaml \
  envoyfilter/envoyfilter.yaml envoyfilter/trafficextension.yaml e2e/envoy.yaml; do
  target/debug/meshaudit check --assume-hmac-key --strict "$config"
  target/debug/meshaudit test --assume-hmac-key "$config" "${config%.yaml}.cases.yaml"
done
target/debug/meshaudit check --strict envoyfilter/wasmplugin-network.yaml

step "fuzz targets, ${FUZZ_SECONDS:-45} s each (cargo-fuzz on stable, --sanitizer none)"
bash scripts/fuzz.sh

step "build the plugin (cargo, then wasm-opt)"
bash scripts/build.sh
ls -l target/meshaudit.wasm

step "end-to-end: real Envoy 1.40 with the built .wasm"
python3 -m pytest -q e2e
