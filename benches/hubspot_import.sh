#!/usr/bin/env bash
# HubSpot import benchmark: `sendtime import hubspot` of EVENTS email events served by the
# stand-in (`sendtime hubspot-standin`, its rate limit lifted), into a fresh store (first
# import) and into the store that already holds them (re-import: every event recognised);
# alternating, medians of RUNS; wall time and peak RSS from /usr/bin/time.
#
#   benches/hubspot_import.sh [EVENTS] [CONTACTS] [RUNS] [MB ...]   (default 1000000 100000 3 64 8)
#
# Each MB is a `--dedup-memory`: below about 24 bytes per event of the window, the ids are held
# a time slice at a time. OTHER_BIN=path adds that binary's first import and re-import (e.g. a
# build of an earlier commit, which has no --dedup-memory); OTHER=reimport keeps only the latter
# (before 0ee7a51 a first import was quadratic in its pages: half an hour for 10M events).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 1000000 100000 /dev/shm/sendtime-hubspot-bench "$@"
BUDGETS=("${REST[@]:-64 8}")
read -ra BUDGETS <<< "${BUDGETS[*]}"
JSON="$BENCH_DIR/events-$EVENTS-$CONTACTS.json"
FRESH="$BENCH_DIR/fresh"
STORE="$BENCH_DIR/store"
# In RAM by default (/dev/shm): removed however the script ends (the JSON is kept for reuse).
remove_at_exit "$STORE" "$FRESH"

# EVENTS events over the year before 2026-11-01, newest first, as HubSpot's events API has them.
if [ ! -s "$JSON" ]; then
  awk -v n="$EVENTS" -v c="$CONTACTS" 'BEGIN {
    split("OPEN CLICK SENT DELIVERED OPEN", kinds, " ");
    end = 1793491200000; step = int(365 * 86400000 / n);
    printf "[";
    for (i = 0; i < n; i++) {
      printf "%s{\"id\":\"ev-%08d-5b1c\",\"created\":%.0f,\"type\":\"%s\",\"recipient\":\"p%d@example.com\",\"emailCampaignId\":7,\"filteredEvent\":false}\n",
        (i ? "," : ""), i, end - i * step, kinds[i % 5 + 1], (i * 7919) % c;
    }
    print "]";
  }' > "$JSON.tmp"
  mv "$JSON.tmp" "$JSON"
fi

standin "$JSON"
WINDOW=(--since 2000-01-01T00:00:00Z --until 2026-11-30T00:00:00Z)

# run STORE BIN [ARG...]: one timed import into STORE, ARGs added; prints
# "seconds peak_kb user_s sys_s".
run() {
  local store=$1 bin=$2
  shift 2
  timed "$bin" --config "$BENCH_DIR/webhooks.toml" --data "$store" import hubspot "${WINDOW[@]}" "$@"
}
rm -rf "$STORE"
run "$STORE" "$BIN" > /dev/null
echo "stored: $(cat "$BENCH_DIR/out.txt")"

ENGINES=""
for mb in "${BUDGETS[@]}"; do ENGINES="$ENGINES first-$mb reimport-$mb"; done
if [ -n "${OTHER_BIN:-}" ]; then
  for what in ${OTHER:-first reimport}; do ENGINES="$ENGINES other-$what"; done
fi
for i in $(seq "$RUNS"); do
  for who in $ENGINES; do
    case $who in
      first-*) rm -rf "$FRESH"; r=$(run "$FRESH" "$BIN" --dedup-memory "${who#first-}"); want=$EVENTS ;;
      reimport-*) r=$(run "$STORE" "$BIN" --dedup-memory "${who#reimport-}"); want=0 ;;
      other-first) rm -rf "$FRESH"; r=$(run "$FRESH" "$OTHER_BIN"); want=$EVENTS ;;
      other-reimport) r=$(run "$STORE" "$OTHER_BIN"); want=0 ;;
    esac
    grep -q "imported $want new event" "$BENCH_DIR/out.txt" || {
      echo "$who: expected $want new events: $(cat "$BENCH_DIR/out.txt")" >&2; exit 1; }
    record "$who" "$r"
    echo "round $i $who: ${t}s ${m}KB" >&2
  done
done
rm -rf "$FRESH"
echo "## $EVENTS events, $CONTACTS contacts, $(nproc) cores, $(date -u +%Y-%m-%d)"
# shellcheck disable=SC2086
table "$RUNS" $ENGINES
