#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 600) of wall time, one at a
# time, under `nice -n 19`, seeding its corpus from seeds/ first. A target
# that crashes before its time is up is reported, then continued in
# libFuzzer's fork mode (-fork=1 -ignore_crashes=1) for the rest of its
# time so that one known finding does not hide others. Logs go to
# logs/<target>.log (git-ignored with target/).
#
# Usage: fuzz/run.sh [target ...]    (default: all targets)
set -u
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-600}
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(checkpoint leaf manifest receipt pack pack_entries merkle)
export RUSTC_BOOTSTRAP=1
# Build once, then run the binaries directly: every target is tested
# against the same build even if ../verifier changes during the runs.
[ "${SKIP_BUILD:-0}" = 1 ] || nice -n 19 cargo fuzz build --codegen-units 16 || exit 2
BIN=target/x86_64-unknown-linux-gnu/release
LIBFUZZER=(-rss_limit_mb=2048 -timeout=10)
mkdir -p target/logs
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n "seeds/$t"/* "corpus/$t/"
  dict=()
  case $t in leaf|manifest|receipt) dict=(-dict=dict/json.dict) ;; esac
  log="target/logs/$t.log"
  start=$(date +%s)
  echo "=== $t: $(date -u +%FT%TZ) normal mode, ${SECONDS_PER_TARGET}s" | tee "$log"
  nice -n 19 "$BIN/$t" -artifact_prefix="artifacts/$t/" "${LIBFUZZER[@]}" "${dict[@]}" \
    -max_total_time="$SECONDS_PER_TARGET" "corpus/$t" >>"$log" 2>&1
  rc=$?
  left=$((SECONDS_PER_TARGET - ($(date +%s) - start)))
  echo "=== $t: exit $rc, ${left}s left" | tee -a "$log"
  # 72 is libFuzzer's exit code for SIGINT/SIGTERM: not a finding, stop.
  [ $rc -eq 72 ] && { echo "=== $t: interrupted by a signal" | tee -a "$log"; exit 72; }
  if [ $rc -ne 0 ] && [ $left -gt 30 ]; then
    echo "=== $t: $(date -u +%FT%TZ) fork mode (-ignore_crashes=1), ${left}s" | tee -a "$log"
    nice -n 19 "$BIN/$t" -artifact_prefix="artifacts/$t/" "${LIBFUZZER[@]}" "${dict[@]}" \
      -fork=1 -ignore_crashes=1 -max_total_time="$left" "corpus/$t" >>"$log" 2>&1
    echo "=== $t: fork mode exit $?" | tee -a "$log"
  fi
done
