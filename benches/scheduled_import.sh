#!/usr/bin/env bash
# Scheduled HubSpot import benchmark: the run `serve` makes on its schedule (the hours since
# the last run, everything in them already stored) into a store holding EVENTS bulk-imported
# rows, the stand-in serving 1,000 events of the last 17 hours; medians of RUNS, alternating
# with OTHER_BIN (e.g. a build of an earlier commit) when given; wall time and peak RSS from
# /usr/bin/time.
#
#   benches/scheduled_import.sh [EVENTS] [CONTACTS] [RUNS]   (default 100000000 2000000 3)
#
# The Parquet file is the one benches/import.sh writes (run it first with the same EVENTS and
# CONTACTS).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 100000000 2000000 /dev/shm/sendtime-import-bench "$@"
PARQUET="$BENCH_DIR/events-$EVENTS-$CONTACTS.parquet"
[ -s "$PARQUET" ] || { echo "no $PARQUET: run benches/import.sh $EVENTS $CONTACTS 1 first" >&2; exit 1; }
STORE="$BENCH_DIR/scheduled-store"
JSON="$BENCH_DIR/recent.json"
# In RAM by default (/dev/shm): removed however the script ends.
remove_at_exit "$STORE" "$JSON"

# 1,000 events a minute apart, newest first, the newest an hour ago.
awk -v now="$(date +%s)000" 'BEGIN {
  printf "[";
  for (i = 0; i < 1000; i++)
    printf "%s{\"id\":\"r%d\",\"created\":%.0f,\"type\":\"OPEN\",\"recipient\":\"q%d@example.com\"}\n",
      (i ? "," : ""), i, now - 3600000 - i * 60000, i % 50;
  print "]";
}' > "$JSON"
standin "$JSON"
rm -rf "$STORE"
CONFIG=(--config "$BENCH_DIR/webhooks.toml" --data "$STORE")
timed "$BIN" "${CONFIG[@]}" import parquet "$PARQUET" --contact contact --time time --kind kind > /dev/null
# The first run stores the recent events; each after reads the hours since the one before.
timed "$BIN" "${CONFIG[@]}" import hubspot > /dev/null
echo "stored: $(cat "$BENCH_DIR/out.txt")"

ENGINES="scheduled"
[ -n "${OTHER_BIN:-}" ] && ENGINES="$ENGINES other-scheduled"
for i in $(seq "$RUNS"); do
  for who in $ENGINES; do
    case $who in
      scheduled) r=$(timed "$BIN" "${CONFIG[@]}" import hubspot) ;;
      other-scheduled) r=$(timed "$OTHER_BIN" "${CONFIG[@]}" import hubspot) ;;
    esac
    grep -q "imported 0 new events" "$BENCH_DIR/out.txt" || {
      echo "$who stored events again: $(cat "$BENCH_DIR/out.txt")" >&2; exit 1; }
    record "$who" "$r"
    echo "round $i $who: ${t}s ${m}KB" >&2
  done
done
rm -rf "$STORE"
echo "## scheduled run, $EVENTS rows stored, $CONTACTS contacts, $(nproc) cores, $(date -u +%Y-%m-%d)"
# shellcheck disable=SC2086
table "$RUNS" $ENGINES
