#!/usr/bin/env bash
# bigmodel and chatglm.cpp side by side on one chatglm3-6b-shaped checkpoint, every ratio measured in one run
# (docs/benchmarks.md, "Side by side with chatglm.cpp"; the rows of benchmarks/run-6b.sh are unchanged).
#
#   benchmarks/side-by-side.sh DATA_DIR
#
# DATA_DIR holds (what the chosen PAIRS need and is missing is made first, except the peer's build):
#   bf16/        the checkpoint: chatglm3-6b shapes, random bf16 weights, 12.5 GB (GenerateCheckpoint, as run-6b.sh,
#                then benchmarks/peer/shift_safetensors.py: tensors 8 bytes past a cache line, as Hugging Face's are)
#   fp16/        a float16 checkpoint of the same shapes and seed, made the same way (chatglm3-6b ships in float16)
#   int8/ int4/  `bigmodel convert bf16 int8 --precision int8` (and int4) of it
#   ggml/        chatglm.cpp's f16, q8_0 and q4_0 files of it and its prompt files
#                (benchmarks/peer/convert-for-chatglm-cpp.sh: needs PEER_SRC, THUDM_DIR, PYTHON when missing)
#   chatglm.cpp-build/bin/main and peer-commits.txt (benchmarks/peer/build-chatglm-cpp.sh SRC DATA_DIR/chatglm.cpp-build)
# and receives side-by-side.md (the tables), side-by-side.jsonl (every run) and side-by-side.log (every output).
#
# Before each run the other settings' files are evicted from the page cache and the setting's own read in, per file
# (posix_fadvise; no root needed), since both systems' files together exceed the page cache of a 24 GiB machine.
#
# Environment (defaults): THREADS (2), PROMPT (16), TOKENS (64), REPEATS (3), LOAD_REPEATS (1: runs that convert
# or quantize while loading), LONG_PROMPT (512; 0 skips the prompt-throughput runs), PAIRS (half,int8,int4),
# WARM (hugepage: own files dropped and faulted in through a MADV_HUGEPAGE mapping; read: read(2)), PACE (1: the
# memory read measured right before and after every decode run too, so that each run is set against its own floor
# on a host whose memory pace changes by the minute; 0: only at the start and the end),
# PEER_BUILD (DATA_DIR/chatglm.cpp-build), OUT (DATA_DIR/side-by-side.md), SEED (42), JAVA_OPTS (bigmodel's JVMs:
# "-Xmx1g"), GEN_ARGS (GenerateCheckpoint options, e.g. "--set num_layers=4" for a small trial model),
# SETTINGS (only these settings of the pairs, by key: bf16, fp16-ckpt, fp16, f16, int8, int8-load, q8_0, int4,
# int4-load, q4_0), RESIDENT (1: every setting's files read into the page cache once and nothing evicted, so a
# round's runs are seconds apart and meet closer memory paces; refused unless the files fit, e.g.
# SETTINGS=fp16-ckpt,f16 on a model cut to half its layers with GEN_ARGS="--set num_layers=14"), PREPARE_ONLY (1:
# make what is missing, run nothing).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  sed -n '2,31p' "$0"
  exit 2
fi
DATA=$(mkdir -p "$1" && cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-2}
PEER_BUILD=${PEER_BUILD:-$DATA/chatglm.cpp-build}
OUT=${OUT:-$DATA/side-by-side.md}
JAR=$ROOT/benchmarks/target/benchmarks.jar
CLI=$ROOT/bigmodel-cli/target/bigmodel.jar

if [[ ! -f $JAR || ! -f $CLI ]]; then
  (cd "$ROOT" && mvn -B -o -q -pl benchmarks,bigmodel-cli -am package -DskipTests)
fi
if [[ ! -x $PEER_BUILD/bin/main ]]; then
  echo "no chatglm.cpp program at $PEER_BUILD/bin/main: build it with" \
    "benchmarks/peer/build-chatglm-cpp.sh CHATGLM_CPP_CHECKOUT $PEER_BUILD" >&2
  exit 1
fi
PAIRS=${PAIRS:-half,int8,int4}
wants() { [[ ,$PAIRS, == *,$1,* ]]; }  # is pair $1 among PAIRS
HALVES=(bf16)
wants half && HALVES+=(fp16)
for d in "${HALVES[@]}"; do
  if [[ ! -f $DATA/$d/config.json ]]; then
    echo "Writing the chatglm3-6b checkpoint in $d into $DATA/$d"
    # shellcheck disable=SC2086
    java -cp "$JAR" io.github.bigmodel.benchmarks.decode.GenerateCheckpoint --out "$DATA/$d" --preset chatglm3-6b \
      --dtype "$d" --shard-size 2GB --seed "${SEED:-42}" ${GEN_ARGS:-}
    # where a Hugging Face checkpoint's tensors lie: 8 bytes past a cache line, not on one as bigmodel writes them
    python3 "$ROOT/benchmarks/peer/shift_safetensors.py" "$DATA/$d" 8
  fi
done
for p in int8 int4; do
  wants "$p" || continue
  if [[ ! -f $DATA/$p/model.safetensors.index.json ]]; then
    echo "Converting the checkpoint to $p into $DATA/$p"
    java -jar "$CLI" convert "$DATA/bf16" "$DATA/$p" --precision "$p" --shard-size 2GB
  fi
done
MISSING=()
for t in f16 q8_0 q4_0; do
  case $t in f16) p=half ;; q8_0) p=int8 ;; q4_0) p=int4 ;; esac
  wants "$p" || continue
  [[ -f $DATA/ggml/chatglm-ggml-$t.bin ]] || MISSING+=("$t")
done
if [[ ${#MISSING[@]} -gt 0 ]]; then
  TYPES=$(IFS=,; echo "${MISSING[*]}")
  echo "Converting the checkpoint with chatglm.cpp's converter into $DATA/ggml ($TYPES)"
  TYPES=$TYPES "$ROOT/benchmarks/peer/convert-for-chatglm-cpp.sh" "$DATA/bf16" "$DATA/ggml"
fi

if [[ ${PREPARE_ONLY:-0} == 1 ]]; then
  echo "Everything is in place in $DATA (PREPARE_ONLY=1: not running)"
  exit 0
fi
if [[ $(nproc) -ne $THREADS ]]; then
  echo "WARNING: chatglm.cpp uses every hardware thread up to 4 ($(nproc) here; it has no thread option)," \
    "bigmodel THREADS=$THREADS: the comparison is not at equal threads" >&2
fi
python3 "$ROOT/benchmarks/peer/side_by_side.py" --checkpoint "$DATA/bf16" --fp16 "$DATA/fp16" \
  --int8 "$DATA/int8" --int4 "$DATA/int4" \
  --ggml "$DATA/ggml" --peer-bin "$PEER_BUILD/bin/main" \
  --peer-commits "$(tr '\n' ';' < "$PEER_BUILD/peer-commits.txt" 2>/dev/null || echo unknown)" \
  --jar "$JAR" --threads "$THREADS" --prompt "${PROMPT:-16}" --tokens "${TOKENS:-64}" --repeats "${REPEATS:-3}" \
  --load-repeats "${LOAD_REPEATS:-1}" --long-prompt "${LONG_PROMPT:-512}" --pairs "$PAIRS" --warm "${WARM:-hugepage}" \
  --settings "${SETTINGS:-}" $([[ ${PACE:-1} == 1 ]] && echo --pace) $([[ ${RESIDENT:-0} == 1 ]] && echo --resident) \
  --java-opts="${JAVA_OPTS:--Xmx1g}" --out "$OUT"
