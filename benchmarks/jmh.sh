#!/usr/bin/env bash
# Every JMH benchmark of the project from the one jar, benchmarks/target/benchmarks.jar (docs/benchmarks.md).
#
#   benchmarks/jmh.sh short [REGEX] [JMH options...]   quick check: 1 fork, 1 warm-up and 2 measured 1 s iterations
#   benchmarks/jmh.sh full  [REGEX] [JMH options...]   the figures: 2 forks, 3 warm-up and 8 measured 2 s iterations
#   benchmarks/jmh.sh list                             the benchmarks in the jar
#
# REGEX selects benchmarks as JMH does (default: all of them); options after it go to JMH unchanged and win over the
# profile's (e.g. "-p prefetch=1"). OMP_NUM_THREADS defaults to 1: on a 2-core machine libtorch's default of one
# OpenMP thread per core made small operations many times slower (docs/benchmarks.md, "Dispatch"); set it to compare.
# The decode benchmark of a 6B model is a program, not JMH: see benchmarks/run-6b.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
JAR=$ROOT/benchmarks/target/benchmarks.jar
if [[ ! -f $JAR ]]; then
  (cd "$ROOT" && mvn -B -o -q -pl benchmarks -am package -DskipTests)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

PROFILE=${1:-short}
shift || true
case $PROFILE in
  short) OPTS=(-f 1 -wi 1 -i 2 -w 1s -r 1s) ;;
  full) OPTS=(-f 2 -wi 3 -i 8 -w 2s -r 2s) ;;
  list) exec java -jar "$JAR" -l ;;
  *) echo "usage: $0 short|full|list [REGEX] [JMH options...]" >&2; exit 2 ;;
esac
REGEX=()
if [[ $# -gt 0 && $1 != -* ]]; then
  REGEX=("$1")
  shift
fi
exec java -jar "$JAR" "${REGEX[@]}" "${OPTS[@]}" "$@"
