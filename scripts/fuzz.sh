#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time on the stable toolchain:
# cargo-fuzz 0.13 with `--sanitizer none` (no nightly needed). Each target starts from the
# committed seeds (fuzz/seeds/<target>) in a scratch corpus, so the repository stays clean.
# A crash fails the run, with its input left in fuzz/artifacts/<target>/ to turn into a unit
# test.   FUZZ_SECONDS (default 45) per target; FUZZ_TARGETS to pick targets.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-45}"
targets="${FUZZ_TARGETS:-config request header_map network verify answers}"
cargo fuzz build --sanitizer none -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  cp fuzz/seeds/"$target"/* "$scratch/$target/"
  echo "==> fuzz $target (${seconds}s)"
  cargo fuzz run "$target" --sanitizer none -O "$scratch/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)|panicked|Crash|crash-' || true
  if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
    echo "fuzz $target: crash found, input in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
