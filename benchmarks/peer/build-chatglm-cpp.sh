#!/usr/bin/env bash
# Builds chatglm.cpp (the peer of docs/benchmarks.md, "Side by side with chatglm.cpp") outside this repository.
#
#   benchmarks/peer/build-chatglm-cpp.sh SRC_DIR BUILD_DIR
#
# SRC_DIR: a checkout of https://github.com/li-plus/chatglm.cpp WITH its submodules (third_party/ggml, sentencepiece,
# re2, abseil-cpp); nothing of it is downloaded here. The figures in docs/benchmarks.md used commit f86777c
# (ggml submodule f4ee239), e.g.
#   git clone --recursive https://github.com/li-plus/chatglm.cpp SRC_DIR && git -C SRC_DIR checkout f86777c \
#     && git -C SRC_DIR submodule update --init --recursive
# BUILD_DIR: where cmake builds (Release, -march=native, static); the program is BUILD_DIR/bin/main.
# It writes BUILD_DIR/peer-commits.txt (the commit of chatglm.cpp and of each submodule, and whether the checkout had
# local changes) for the benchmark's report.
#
# Environment: JOBS (parallel compile jobs, default 2), NICE (niceness, default 10).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  sed -n '2,16p' "$0"
  exit 2
fi
SRC=$(cd "$1" && pwd)
mkdir -p "$2"
BUILD=$(cd "$2" && pwd)
JOBS=${JOBS:-2}
NICE=${NICE:-10}

for f in CMakeLists.txt main.cpp chatglm_cpp/convert.py third_party/ggml/CMakeLists.txt \
  third_party/sentencepiece/CMakeLists.txt third_party/re2/CMakeLists.txt third_party/abseil-cpp/CMakeLists.txt; do
  if [[ ! -f $SRC/$f ]]; then
    echo "$SRC/$f is missing: SRC_DIR must be a chatglm.cpp checkout with its submodules" \
      "(git submodule update --init --recursive)" >&2
    exit 1
  fi
done

# The commits built, for the report (a source tree that is not a git checkout is recorded as such).
{
  echo "chatglm.cpp $(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)" \
    "$(git -C "$SRC" diff --quiet --ignore-submodules 2>/dev/null && echo clean || echo 'local changes')"
  for sm in ggml sentencepiece re2 abseil-cpp; do
    changes=$(git -C "$SRC/third_party/$sm" status --porcelain 2>/dev/null || true)
    echo "third_party/$sm $(git -C "$SRC/third_party/$sm" rev-parse HEAD 2>/dev/null || echo unknown)" \
      "${changes:+(local changes: $(echo "$changes" | awk '{print $1 " " $2}' | tr '\n' ',' | sed 's/,$//'))}"
  done
  echo "compiler $(${CXX:-c++} --version | head -1)"
  echo "flags -O3 (Release) -march=native"
} > "$BUILD/peer-commits.txt"
cat "$BUILD/peer-commits.txt"

nice -n "$NICE" cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS=-march=native -DCMAKE_CXX_FLAGS=-march=native \
  -DCHATGLM_ENABLE_EXAMPLES=ON -DCHATGLM_ENABLE_PYBIND=OFF -DCHATGLM_ENABLE_TESTING=OFF >"$BUILD/cmake-configure.log"
# Only the command-line program: the other targets (sentencepiece's trainer, ggml's examples) are not needed.
nice -n "$NICE" cmake --build "$BUILD" --target main -j "$JOBS"
echo "built $BUILD/bin/main"
