#!/usr/bin/env bash
# Bulk import benchmark (issue 15): `sendtime import csv` / `import parquet` against DuckDB and
# Python Polars doing the same job from the same files (read, derive hour-of-week, count per
# contact and slot), side by side, alternating, medians of RUNS; wall time and peak RSS from
# /usr/bin/time.
#
#   benches/import.sh [EVENTS] [CONTACTS] [RUNS]      (default 10000000 200000 3)
#   benches/import.sh 100000000 2000000 1
#
# OTHER_BIN=path adds that binary's imports (e.g. a build of an earlier commit) to the rounds.
#
# The data (seeded; numeric contact ids, RFC 3339 times over 2025, OPEN/CLICK/DELIVERED) lives
# outside the repository in $BENCH_DIR (default /dev/shm/sendtime-import-bench: 100M events
# are 3.6 GB of CSV). The CSV is written by awk; the Parquet copy (time as a timestamp) by
# DuckDB or Polars. DuckDB and Polars come from PyPI: `pip install duckdb polars` (or set PY
# to a python that has them); rows of an engine that is missing are skipped, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 10000000 200000 /dev/shm/sendtime-import-bench "$@"
PY=${PY:-python3}
CSV="$BENCH_DIR/events-$EVENTS-$CONTACTS.csv"
PARQUET="$BENCH_DIR/events-$EVENTS-$CONTACTS.parquet"
STORE="$BENCH_DIR/store"
# In RAM by default (/dev/shm): removed however the script ends (the inputs are kept for reuse).
remove_at_exit "$STORE"

has() { "$PY" -c "import $1" 2>/dev/null; }
HAVE_DUCKDB=$(has duckdb && echo yes || echo no)
HAVE_POLARS=$(has polars && echo yes || echo no)
[ $HAVE_DUCKDB = yes ] || echo "DuckDB is not installed for $PY: its rows are skipped (pip install duckdb)" >&2
[ $HAVE_POLARS = yes ] || echo "Polars is not installed for $PY: its rows are skipped (pip install polars)" >&2

if [ ! -s "$CSV" ]; then
  echo "writing $CSV" >&2
  awk -v n="$EVENTS" -v c="$CONTACTS" 'BEGIN {
    srand(1)
    split("OPEN CLICK DELIVERED", kinds, " ")
    start = 1735689600  # 2025-01-01T00:00:00Z
    print "contact,time,kind"
    for (i = 0; i < n; i++)
      printf "%d,%s,%s\n", 1000 + int(rand() * c),
        strftime("%Y-%m-%dT%H:%M:%SZ", start + int(rand() * 31536000), 1), kinds[1 + int(rand() * 3)]
  }' > "$CSV.tmp"
  mv "$CSV.tmp" "$CSV"
fi
if [ ! -s "$PARQUET" ]; then
  echo "writing $PARQUET" >&2
  if [ $HAVE_DUCKDB = yes ]; then
    "$PY" -c "
import duckdb
duckdb.sql('SET enable_progress_bar = false')
duckdb.sql(\"\"\"COPY (SELECT * FROM read_csv('$CSV', header = true,
  columns = {'contact': 'BIGINT', 'time': 'TIMESTAMP', 'kind': 'VARCHAR'}))
  TO '$PARQUET.tmp' (FORMAT parquet)\"\"\")"
  elif [ $HAVE_POLARS = yes ]; then
    "$PY" -c "
import polars as pl
(pl.scan_csv('$CSV', schema={'contact': pl.Int64, 'time': pl.String, 'kind': pl.String})
   .with_columns(pl.col('time').str.to_datetime('%Y-%m-%dT%H:%M:%SZ', time_unit='us'))
   .sink_parquet('$PARQUET.tmp'))"
  fi
  [ -s "$PARQUET.tmp" ] && mv "$PARQUET.tmp" "$PARQUET"
fi

# The same job for DuckDB and Polars: read, hour of week (Monday 00:00 = 0), count per contact
# and slot. Each prints the number of (contact, slot) groups.
DUCK_CSV="read_csv('$CSV', header = true, columns = {'contact': 'BIGINT', 'time': 'TIMESTAMP', 'kind': 'VARCHAR'})"
cat > "$BENCH_DIR/duck.py" <<PYEOF
import duckdb, sys
source = {'csv': """$DUCK_CSV""", 'parquet': "read_parquet('$PARQUET')"}[sys.argv[1]]
n = duckdb.connect().execute(f"""
  SELECT count(*) FROM (
    SELECT contact, (isodow(time) - 1) * 24 + hour(time) AS slot, count(*) AS n
    FROM {source} GROUP BY ALL)""").fetchone()[0]
print(n, file=sys.stderr)
PYEOF
cat > "$BENCH_DIR/pl.py" <<PYEOF
import polars as pl, sys
if sys.argv[1] == 'csv':
    df = (pl.scan_csv('$CSV', schema={'contact': pl.Int64, 'time': pl.String, 'kind': pl.String})
            .with_columns(pl.col('time').str.to_datetime('%Y-%m-%dT%H:%M:%SZ', time_unit='us')))
else:
    df = pl.scan_parquet('$PARQUET')
t = pl.col('time')
n = (df.group_by(['contact', ((t.dt.weekday() - 1) * 24 + t.dt.hour()).alias('slot')]).len()
       .collect().height)
print(n, file=sys.stderr)
PYEOF

ENGINES="sendtime-csv"
[ -n "${OTHER_BIN:-}" ] && ENGINES="$ENGINES other-csv"
[ $HAVE_DUCKDB = yes ] && ENGINES="$ENGINES duckdb-csv"
[ $HAVE_POLARS = yes ] && ENGINES="$ENGINES polars-csv"
if [ -s "$PARQUET" ]; then
  ENGINES="$ENGINES sendtime-parquet"
  [ -n "${OTHER_BIN:-}" ] && ENGINES="$ENGINES other-parquet"
  [ $HAVE_DUCKDB = yes ] && ENGINES="$ENGINES duckdb-parquet"
  [ $HAVE_POLARS = yes ] && ENGINES="$ENGINES polars-parquet"
else
  echo "no Parquet file (needs DuckDB or Polars to write it): Parquet rows skipped" >&2
fi
IMPORT=("$BIN" --config webhooks.toml --data "$STORE" import)
COLS=(--contact contact --time time --kind kind)
for i in $(seq "$RUNS"); do
  # Every other round in reverse (sys time up to 0.5 s more after an engine that used
  # gigabytes).
  for who in $(round_order "$i" $ENGINES); do
    case $who in
      sendtime-csv) r=$(cold "$CSV" "${IMPORT[@]}" csv "$CSV" "${COLS[@]}") ;;
      sendtime-parquet) r=$(cold "$PARQUET" "${IMPORT[@]}" parquet "$PARQUET" "${COLS[@]}") ;;
      other-csv) r=$(cold "$CSV" "$OTHER_BIN" "${IMPORT[@]:1}" csv "$CSV" "${COLS[@]}") ;;
      other-parquet) r=$(cold "$PARQUET" "$OTHER_BIN" "${IMPORT[@]:1}" parquet "$PARQUET" "${COLS[@]}") ;;
      duckdb-*) r=$(cold "$BENCH_DIR/events-$EVENTS-$CONTACTS.${who#*-}" "$PY" "$BENCH_DIR/duck.py" "${who#*-}") ;;
      polars-*) r=$(cold "$BENCH_DIR/events-$EVENTS-$CONTACTS.${who#*-}" "$PY" "$BENCH_DIR/pl.py" "${who#*-}") ;;
    esac
    record "$who" "$r"
    echo "run $i $who: $t s wall, $u s user, $sy s sys, $m KB peak; $(head -c 200 "$BENCH_DIR/out.txt" "$BENCH_DIR/err.txt" | tr '\n' ' ')" >&2
  done
done
rm -rf "$STORE"
table "$RUNS" $ENGINES
# Side by side: the median over rounds of sendtime's wall time over DuckDB's in the same round.
for who in sendtime other; do
  for fmt in csv parquet; do
    [ -n "${T[$who-$fmt]:-}" ] && [ -n "${T[duckdb-$fmt]:-}" ] || continue
    ratio=$(paste <(echo "${T[$who-$fmt]}" | tr ' ' '\n' | grep -v '^$') \
                  <(echo "${T[duckdb-$fmt]}" | tr ' ' '\n' | grep -v '^$') |
            awk '{printf "%.3f\n", $1 / $2}' | tr '\n' ' ' | median)
    echo "$who / DuckDB, $fmt: median of per-round wall-time ratios $ratio"
  done
done
VERSIONS=$("$PY" -c 'import importlib.metadata as m
print(", ".join(f"{p} {m.version(p)}" for p in ("duckdb", "polars") if __import__("importlib.util").util.find_spec(p)))')
echo
echo "$EVENTS events, $CONTACTS contacts; CSV $(du -m "$CSV" | cut -f1) MB$([ -s "$PARQUET" ] && echo ", Parquet $(du -m "$PARQUET" | cut -f1) MB") ($VERSIONS, $(nproc) cores, $(date -u +%Y-%m-%d))"
