#!/usr/bin/env bash
# Many small event parts against the same events merged: what a year of imports from HubSpot
# (a part a page) costs every full profile rebuild and contact lookup, and what the merge at a
# profile update costs. EVENTS events of CONTACTS contacts are imported from a CSV in PARTS
# parts; the store is copied, and one copy's parts are merged by `sendtime profiles` (its
# first update past 64 parts). Then `profiles --rebuild` and `explain` run on both copies,
# alternating, RUNS times each (the unmerged copy with `events.lock` held, so nothing merges
# it); medians of wall time and peak RSS from /usr/bin/time.
#
#   benches/event_parts.sh [EVENTS] [CONTACTS] [RUNS] [PARTS]   (default 1000000 50000 3 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 1000000 50000 /dev/shm/sendtime-parts-bench "$@"
PARTS=${REST[0]:-5000}
CSV="$BENCH_DIR/events-$EVENTS-$CONTACTS.csv"
awk -v n="$EVENTS" -v c="$CONTACTS" 'BEGIN {
  print "contact,time,kind";
  for (i = 0; i < n; i++) {
    printf "%d,%d,OPEN\n", i % c + 1, 1735689600 + int(i * 31536000 / n);
  }
}' > "$CSV"
MANY="$BENCH_DIR/many" MERGED="$BENCH_DIR/merged"
rm -rf "$MANY" "$MERGED"
remove_at_exit "$MANY" "$MERGED" "$CSV"
CONFIG=(--config webhooks.toml)
timed "$BIN" "${CONFIG[@]}" --data "$MANY" import csv "$CSV" --contact contact --time time \
  --kind kind --part-rows $(( EVENTS / PARTS )) > /dev/null
cp -r "$MANY" "$MERGED"
echo "parts: $(ls "$MANY/events" | grep -c parquet) events, $(ls "$MANY/contacts" | grep -c parquet) contacts"
r=$(timed "$BIN" "${CONFIG[@]}" --data "$MERGED" profiles)
echo "merging update (seconds peak_kb user_s sys_s): $r"
# Merged a million rows a round: later updates take the rest. Counted in rounds, not files: a
# merge's sources stay on disk, no longer listed, for ten minutes (SOURCE_GRACE).
for _ in $(seq 2 $(( (EVENTS + 999999) / 1000000 ))); do
  timed "$BIN" "${CONFIG[@]}" --data "$MERGED" profiles --rebuild > /dev/null
done

for i in $(seq "$RUNS"); do
  r=$(timed flock "$MANY/events.lock" "$BIN" "${CONFIG[@]}" --data "$MANY" profiles --rebuild)
  record many-rebuild "$r"
  r=$(timed "$BIN" "${CONFIG[@]}" --data "$MERGED" profiles --rebuild)
  record merged-rebuild "$r"
  r=$(timed "$BIN" "${CONFIG[@]}" --data "$MANY" explain 7)
  record many-explain "$r"
  r=$(timed "$BIN" "${CONFIG[@]}" --data "$MERGED" explain 7)
  record merged-explain "$r"
done
table "$RUNS" many-rebuild merged-rebuild many-explain merged-explain
