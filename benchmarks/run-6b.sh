#!/usr/bin/env bash
# Decode benchmark of a 6B ChatGLM3 with random weights (docs/benchmarks.md, "A 6B ChatGLM3 on a small machine").
#
#   benchmarks/run-6b.sh MODEL_DIR [ROWS]          ROWS: all (default: a to d) or a,b-noprefetch,b-prefetch,c,d,fp16,
#                                                  b-int8,b-int4 (budget + disk with int8/int4 blocks; MODEL_DIR a
#                                                  `bigmodel convert` folder, or a bf16 one with EXTRA="--offload DIR")
#
# 1. builds benchmarks/target/benchmarks.jar if absent;
# 2. writes the checkpoint into MODEL_DIR if it has no config.json (chatglm3-6b shapes, bf16, 2 GB shards, 12.5 GB;
#    GEN_ARGS adds GenerateCheckpoint options, e.g. "--set num_layers=4" for a smaller model);
# 3. creates a memory cgroup (v1) /sys/fs/cgroup/memory/$CGROUP with memory.limit_in_bytes = BUDGET_MIB +
#    HEADROOM_MIB; only the JVMs of the disk rows (b) join it, never this shell; it caps their page cache too, so
#    offloaded weights are really read from disk for every token;
# 4. runs DecodeProgram: bandwidths first, then each row in a fresh JVM, the page cache dropped before each
#    (sync; echo 3 > /proc/sys/vm/drop_caches, root only: without root the rows say so);
# 5. prints the cgroup's peak usage and limit hits and removes the cgroup (also on failure or Ctrl-C).
#
# Run as root (the cgroup and drop_caches need it; a root shell needs no sudo). The comparison with chatglm.cpp is
# benchmarks/side-by-side.sh.
#
# Environment (defaults): THREADS (2), PROMPT (16), TOKENS (64), BUDGET_MIB (4096), HEADROOM_MIB (1024),
# PRESET (chatglm3-6b), SEED (42), CGROUP (bigmodel-decode-$$), OUT (MODEL_DIR/decode-results.txt),
# EXTRA (more DecodeProgram options, e.g. "--disk-bytes 4GiB").
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,26p' "$0"
  exit 2
fi
MODEL_DIR=$1
ROWS=${2:-all}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-16}
TOKENS=${TOKENS:-64}
BUDGET_MIB=${BUDGET_MIB:-4096}
HEADROOM_MIB=${HEADROOM_MIB:-1024}
PRESET=${PRESET:-chatglm3-6b}
SEED=${SEED:-42}
CGROUP=${CGROUP:-bigmodel-decode-$$}
OUT=${OUT:-$MODEL_DIR/decode-results.txt}
GEN_ARGS=${GEN_ARGS:-}
EXTRA=${EXTRA:-}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JAR=$ROOT/benchmarks/target/benchmarks.jar
if [[ ! -f $JAR ]]; then
  (cd "$ROOT" && mvn -B -o -q -pl benchmarks -am package -DskipTests)
fi

if [[ ! -f $MODEL_DIR/config.json ]]; then
  echo "Writing the $PRESET checkpoint into $MODEL_DIR"
  # shellcheck disable=SC2086
  java -cp "$JAR" io.github.bigmodel.benchmarks.decode.GenerateCheckpoint --out "$MODEL_DIR" --preset "$PRESET" \
    --dtype bf16 --shard-size 2GB --seed "$SEED" $GEN_ARGS
fi

CG_DIR=/sys/fs/cgroup/memory/$CGROUP
CG_ARGS=()
cleanup() {
  if [[ -d $CG_DIR ]]; then
    echo "cgroup $CGROUP: peak usage $(cat "$CG_DIR/memory.max_usage_in_bytes") bytes, limit" \
      "$(cat "$CG_DIR/memory.limit_in_bytes") bytes, limit hits $(cat "$CG_DIR/memory.failcnt")" | tee -a "$OUT"
    # The rows' JVMs have exited; give the kernel a moment to move their charges before removing the group.
    for _ in 1 2 3 4 5; do rmdir "$CG_DIR" 2>/dev/null && break; sleep 1; done
    if [[ -d $CG_DIR ]]; then
      echo "could not remove $CG_DIR: remove it with rmdir" >&2
    fi
  fi
  return 0
}
trap cleanup EXIT
if [[ $ROWS == all || $ROWS == *b* ]]; then
  if [[ -w /sys/fs/cgroup/memory ]] && mkdir "$CG_DIR" 2>/dev/null; then
    echo $(( (BUDGET_MIB + HEADROOM_MIB) * 1024 * 1024 )) > "$CG_DIR/memory.limit_in_bytes"
    CG_ARGS=(--cgroup "$CGROUP")
    echo "disk rows run in memory cgroup $CGROUP, limit $((BUDGET_MIB + HEADROOM_MIB)) MiB"
  else
    echo "WARNING: cannot create a memory cgroup under /sys/fs/cgroup/memory (cgroup v1, root needed):" \
      "the disk rows run without one, their offloaded weights may come from the page cache" >&2
  fi
fi

# shellcheck disable=SC2086
java -cp "$JAR" io.github.bigmodel.benchmarks.decode.DecodeProgram --model "$MODEL_DIR" --row "$ROWS" \
  --prompt "$PROMPT" --tokens "$TOKENS" --threads "$THREADS" --budget "${BUDGET_MIB}MiB" --drop-caches \
  "${CG_ARGS[@]}" $EXTRA | tee "$OUT"
