#!/usr/bin/env bash
# What a file of many contacts new to the store costs `import csv`: one event per contact, so
# the contact dictionary is all that grows. Wall time and peak RSS from /usr/bin/time, the
# median of RUNS, for email addresses and for numeric HubSpot ids.
#
#   benches/new_contacts.sh [ROWS...]      (default 1000000 5000000; RUNS=3)
#
# OTHER_BIN=path adds that binary's import of each file (e.g. a build of an earlier commit),
# alternating with this build's.
#
# The files (seeded) and stores live in $BENCH_DIR (default /dev/shm/sendtime-new-contacts;
# the files, about 0.6 GB at 5M, are kept for reuse, the store removed however it ends). The
# last column is the peak over the contacts, the process's base included: the difference
# between two sizes is the cost of a contact.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 5000000)
setup 0 0 /dev/shm/sendtime-new-contacts 0 0 "${RUNS:-3}"
STORE="$BENCH_DIR/store"
remove_at_exit "$STORE"
ENGINES="sendtime"
[ -n "${OTHER_BIN:-}" ] && ENGINES="$ENGINES other"
echo "| contacts | keys | binary | wall s, median of $RUNS | peak RSS MiB | peak bytes / contact |"
echo "|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  for keys in emails ids; do
    csv="$BENCH_DIR/$keys-$n.csv"
    if [ ! -s "$csv" ]; then
      awk -v n="$n" -v keys="$keys" 'BEGIN {
        srand(2)
        start = 1735689600  # 2025-01-01T00:00:00Z
        print "contact,time,kind"
        for (i = 0; i < n; i++) {
          key = keys == "emails" ? sprintf("person%d@example%d.com", i, i % 997) : 1000 + i
          printf "%s,%s,OPEN\n", key, strftime("%Y-%m-%dT%H:%M:%SZ", start + int(rand() * 31536000), 1)
        }
      }' > "$csv.tmp"
      mv "$csv.tmp" "$csv"
    fi
    for i in $(seq "$RUNS"); do
      for who in $(round_order "$i" $ENGINES); do
        bin=$BIN
        [ "$who" = other ] && bin=$OTHER_BIN
        r=$(fresh_import "$bin" "$csv")
        record "$who-$keys-$n" "$r"
      done
    done
    for who in $ENGINES; do
      t=$(echo "${T[$who-$keys-$n]}" | median); m=$(echo "${M[$who-$keys-$n]}" | median)
      echo "| $n | $keys | $who | $t | $((m / 1024)) | $((m * 1024 / n)) |"
    done
  done
done
echo
echo "$(nproc) cores, $(date -u +%Y-%m-%d)"
