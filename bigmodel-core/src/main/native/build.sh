#!/usr/bin/env bash
# Builds libbigmodel_kernels.so into $1 (the kernel package's linux-x86_64 resource folder) with the JDK at $2 for
# jni.h. Run by Maven (bigmodel-core, process-classes). Skips, with a warning, where the platform is not Linux x86-64
# or no C compiler is found: the library then uses libtorch's kernels (NativeKernels.available() is false).
set -euo pipefail
out=$1
jdk=$2
src=$(cd "$(dirname "$0")" && pwd)/bigmodel_kernels.c
if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
  echo "[native-kernels] not Linux x86-64: skipped (libtorch's kernels will be used)"
  exit 0
fi
cc=${CC:-}
if [[ -z $cc ]]; then
  for c in gcc cc clang; do
    if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
  done
fi
if [[ -z $cc ]]; then
  echo "[native-kernels] WARNING: no C compiler (gcc, cc, clang): skipped; libtorch's kernels will be used" >&2
  exit 0
fi
mkdir -p "$out"
if [[ -f $out/libbigmodel_kernels.so && $out/libbigmodel_kernels.so -nt $src && $out/libbigmodel_kernels.so -nt $0 ]]; then
  exit 0
fi
# -O3 and the per-function AVX-512 targets in the source; the library itself runs on any x86-64 (it says level 0
# where AVX-512 is missing). libgomp: the one libtorch's natives bring is loaded first and shared.
"$cc" -O3 -std=gnu11 -ffp-contract=off -fPIC -shared -fopenmp -Wall -Wextra -Werror \
  -I"$jdk/include" -I"$jdk/include/linux" "$src" -o "$out/libbigmodel_kernels.so"
echo "[native-kernels] built $out/libbigmodel_kernels.so with $cc"
