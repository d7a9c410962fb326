#!/usr/bin/env bash
# A contact lookup against an archive of ROWS plan and outcome rows, read as lookups read
# before (`whole`: every row converted, then filtered) and now (`parts`: each part filtered
# first), alternating, one process per run. Prints each run's wall time of the lookup and the
# process's peak RSS, then the medians.
#
# benches/lookup.sh [ROWS (default 1000000)] [RUNS (default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-release}"
BUILT=$(cargo bench --bench lookup --no-run 2>&1) || { echo "$BUILT" >&2; exit 1; }
BIN=$(echo "$BUILT" | grep -o '([^)]*lookup-[0-9a-f]*)' | tr -d '()') || {
  echo "no bench executable in cargo's output:" >&2; echo "$BUILT" >&2; exit 1; }
DIR=$(mktemp -d "${TMPDIR:-/tmp}/lookup-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
"$BIN" gen "$DIR/data" "$ROWS"
for run in $(seq "$RUNS"); do
  for mode in whole parts; do
    /usr/bin/time -f "%M" -o "$DIR/rss" "$BIN" "$mode" "$DIR/data" > "$DIR/out"
    echo "$run $(cat "$DIR/out") $(cat "$DIR/rss")"
  done
done | tee "$DIR/runs"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for mode in whole parts; do
  secs=$(awk -v m="$mode" '$2 == m { print $3 }' "$DIR/runs" | median)
  kb=$(awk -v m="$mode" '$2 == m { print $4 }' "$DIR/runs" | median)
  echo "$mode: median $secs s, peak RSS median $((kb / 1024)) MB ($ROWS rows, $RUNS runs)"
done
