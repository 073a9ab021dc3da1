#!/usr/bin/env bash
# A/B of two release binaries on one machine, the same hour: mint and
# introspection (bench/mint.sh, bench/introspect.sh) for A, then B, twice, so a
# drift of the machine shows up as a drift, not as a difference.
#   bench/ab.sh /path/to/mayfly-a /path/to/mayfly-b
# Build a past commit's binary with `git worktree add /tmp/base <commit>` and
# `CARGO_TARGET_DIR=$PWD/target cargo build --release --bin mayfly` there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ab.sh BINARY_A BINARY_B" >&2; exit 2; }
export BENCH_RUNS="${BENCH_RUNS:-3}" BENCH_BACKENDS="${BENCH_BACKENDS:-sqlite postgres}"
for round in 1 2; do
  for bin in "$1" "$2"; do
    echo "### $bin, round $round"
    MAYFLY_BIN=$bin bash bench/mint.sh 2>&1 | grep '^| mint'
    MAYFLY_BIN=$bin bash bench/introspect.sh 2>&1 | grep '^| introspect'
  done
done
