#!/usr/bin/env bash
# What one long CSV record costs `import csv` while it is read: the same 2,001 short rows with
# and without a record whose ignored column holds MB megabytes (default 200; the reader takes
# records up to 256 MB). Wall time and peak RSS from /usr/bin/time, medians of RUNS, alternating.
#
#   benches/long_record.sh [MB] [RUNS]      (default 200 3)
#
# The files (in $BENCH_DIR, default /dev/shm/sendtime-long-record) are kept for reuse, the
# store removed however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 200 0 /dev/shm/sendtime-long-record "${1:-200}" 0 "${2:-3}"
MB=$EVENTS
STORE="$BENCH_DIR/store"
remove_at_exit "$STORE"
# Times of day that vary (one time of day for all would be refused as dates), OPEN each.
write() {
  awk -v mb="$1" 'BEGIN {
    print "contact,time,kind,note"
    for (i = 0; i < 2001; i++) {
      printf "%d,2025-03-0%dT%02d:%02d:00Z,OPEN,", 1000 + i, 1 + i % 9, 10 + i % 2, i % 60
      if (i == 1000 && mb > 0) {
        printf "\""
        chunk = "y"
        while (length(chunk) < 1048576) chunk = chunk chunk
        for (m = 0; m < mb; m++) printf "%s", chunk
        print "\""
      } else print "x"
    }
  }' > "$2.tmp"
  mv "$2.tmp" "$2"
}
LONG="$BENCH_DIR/long-$MB.csv"
SHORT="$BENCH_DIR/short.csv"
[ -s "$LONG" ] || write "$MB" "$LONG"
[ -s "$SHORT" ] || write 0 "$SHORT"
for i in $(seq "$RUNS"); do
  for who in long short; do
    csv=$LONG
    [ "$who" = short ] && csv=$SHORT
    r=$(fresh_import "$BIN" "$csv")
    record "$who" "$r"
  done
done
table "$RUNS" long short
echo
echo "a record of $MB MiB among 2,000 short ones; $(nproc) cores, $(date -u +%Y-%m-%d)"
