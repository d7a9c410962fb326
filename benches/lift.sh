#!/usr/bin/env bash
# What the lift report reads of an archive of ROWS planned receipts (and twice as many outcome
# rows): as it read before (`whole`: every row of both datasets converted) and now (`lean`:
# the plan's columns it needs and the outcomes' sends, a part at a time), alternating, one
# process per run. Prints each run's wall time of the read and the process's peak RSS, then
# the medians.
#
# benches/lift.sh [ROWS (default 1000000)] [RUNS (default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-release}"
BUILT=$(cargo bench --bench lift --no-run 2>&1) || { echo "$BUILT" >&2; exit 1; }
BIN=$(echo "$BUILT" | grep -o '([^)]*lift-[0-9a-f]*)' | tr -d '()') || {
  echo "no bench executable in cargo's output:" >&2; echo "$BUILT" >&2; exit 1; }
DIR=$(mktemp -d "${TMPDIR:-/tmp}/lift-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
"$BIN" gen "$DIR/data" "$ROWS"
for run in $(seq "$RUNS"); do
  for mode in whole lean; do
    /usr/bin/time -f "%M" -o "$DIR/rss" "$BIN" "$mode" "$DIR/data" > "$DIR/out"
    echo "$run $(cat "$DIR/out") $(cat "$DIR/rss")"
  done
done | tee "$DIR/runs"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for mode in whole lean; do
  secs=$(awk -v m="$mode" '$2 == m { print $3 }' "$DIR/runs" | median)
  kb=$(awk -v m="$mode" '$2 == m { print $5 }' "$DIR/runs" | median)
  echo "$mode: median $secs s, peak RSS median $((kb / 1024)) MB ($ROWS rows, $RUNS runs)"
done
