#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with the nightly toolchain, from the
# committed seed corpus (fuzz/corpus/<target>, written by tests/seed_corpus.rs).
# Installs cargo-fuzz if it is missing. Crashes land in fuzz/artifacts/<target>/;
# turn each into a regression test in tests/. Exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz || exit 1
fi
status=0
for target in wire_decode codec_roundtrip apply_stream migrate_interleaved; do
  # Fuzz into a scratch copy so the committed seeds stay small.
  work="$(mktemp -d)"
  cp -r "corpus/$target/." "$work/" 2>/dev/null || true
  log="$(mktemp)"
  echo "=== $target for ${seconds}s"
  if ! cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$seconds" \
      -max_len=70000 -print_final_stats=1 >"$log" 2>&1; then
    status=1
    echo "CRASH in $target (see fuzz/artifacts/$target):"
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|cov: " \
    "$log" | tail -4
  rm -rf "$work" "$log"
done
exit "$status"
