#!/usr/bin/env bash
# Re-import benchmark: `sendtime import csv` of a file whose rows are all stored already, so
# every row is checked against the stored events and skipped, next to the first import of the
# same file; alternating, medians of RUNS; wall time and peak RSS from /usr/bin/time.
#
#   benches/reimport.sh [EVENTS] [CONTACTS] [RUNS] [MB ...]   (default 10000000 200000 3 384 1024)
#
# Each MB is a `--dedup-memory`: below 8 bytes per stored event the file is read in passes.
# The CSV is the one benches/import.sh writes (run it first with the same EVENTS and CONTACTS).
# OTHER_BIN=path adds that binary's re-import (e.g. a build of an earlier commit), same store.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 10000000 200000 /dev/shm/sendtime-import-bench "$@"
BUDGETS=("${REST[@]:-384 1024}")
read -ra BUDGETS <<< "${BUDGETS[*]}"
CSV="$BENCH_DIR/events-$EVENTS-$CONTACTS.csv"
[ -s "$CSV" ] || { echo "no $CSV: run benches/import.sh $EVENTS $CONTACTS 1 first" >&2; exit 1; }
FRESH="$BENCH_DIR/reimport-fresh"
STORE="$BENCH_DIR/reimport-store"

COLS=(--contact contact --time time --kind kind)
# run STORE BIN [ARG...]: one timed import of the CSV into STORE, ARGs added to the import;
# prints "seconds peak_kb user_s sys_s".
run() {
  local store=$1 bin=$2
  shift 2
  cat "$CSV" > /dev/null
  timed "$bin" --config webhooks.toml --data "$store" import csv "$CSV" "${COLS[@]}" "$@"
}
rm -rf "$STORE"
remove_at_exit "$STORE" "$FRESH"
run "$STORE" "$BIN" > /dev/null
echo "stored: $(cat "$BENCH_DIR/out.txt")"

ENGINES="first-import"
for mb in "${BUDGETS[@]}"; do ENGINES="$ENGINES reimport-$mb"; done
[ -n "${OTHER_BIN:-}" ] && ENGINES="$ENGINES other-reimport"
for i in $(seq "$RUNS"); do
  for who in $ENGINES; do
    case $who in
      first-import) rm -rf "$FRESH"; r=$(run "$FRESH" "$BIN") ;;
      reimport-*) r=$(run "$STORE" "$BIN" --dedup-memory "${who#reimport-}") ;;
      other-reimport) r=$(run "$STORE" "$OTHER_BIN") ;;
    esac
    grep -q "imported\|nothing to import" "$BENCH_DIR/out.txt"
    if [ "$who" != first-import ] && ! grep -q "nothing to import" "$BENCH_DIR/out.txt"; then
      echo "$who imported rows on a re-import: $(cat "$BENCH_DIR/out.txt")" >&2; exit 1
    fi
    record "$who" "$r"
    echo "round $i $who: ${t}s ${m}KB" >&2
  done
done
rm -rf "$FRESH"
echo "## $EVENTS events, $CONTACTS contacts, $(nproc) cores, $(date -u +%Y-%m-%d)"
# shellcheck disable=SC2086
table "$RUNS" $ENGINES
