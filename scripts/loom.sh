#!/usr/bin/env bash
# Model-checks the shard hand-off ring (weft-handoff) with loom: the interleavings of a
# producer and a consumer on rings of 1-2 slots with 2-4 frames (src/loom_tests.rs), all of
# them for the smaller models and those with at most 4-5 preemptions for the larger ones.
# Builds into its own target dir, since `--cfg loom` would otherwise invalidate the main
# build cache.
#
#   scripts/loom.sh [cargo test args...]      e.g. scripts/loom.sh no_lost_wakeup
#   LOOM_MAX_PREEMPTIONS=99 scripts/loom.sh   # (practically) no bound: slow, >10 min per larger model
#   LOOM_LOG=trace LOOM_LOCATION=1 scripts/loom.sh ...   # to debug a failing model
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s%N)
# One model at a time: loom is CPU-bound and the machine has 2 shared cores (serially the
# models take ~16 s; in parallel, longer).
RUSTFLAGS="${RUSTFLAGS:-} --cfg loom" CARGO_TARGET_DIR=target/loom RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}" \
  cargo test -p weft-handoff --release --lib "$@"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'loom.sh: %d.%03d s (build and models)\n' $((ms / 1000)) $((ms % 1000))
