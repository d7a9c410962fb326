#!/usr/bin/env bash
# Profile-building benchmark (issue 4): sendtime vs DuckDB vs Python Polars on the same Parquet
# files, side by side, alternating, medians of N runs; peak memory from /usr/bin/time.
#
#   benches/profiles.sh [EVENTS] [CONTACTS] [RUNS]      (default 100000000 2000000 3)
#
# With BASE_BIN=path/to/an/older/sendtime, that build's dry-run profile build runs alongside
# as engine "sendtime-base", so a change is measured against the code before it in one run
# (BASE_CONFIG names a config that build reads, when the shipped one is newer than it).
# With FIXED_CONFIG=path/to/a/webhooks.toml whose [model] gives numbers instead of "auto",
# engine "sendtime-fixed" builds without the fit, so the fit's cost is measured too.
#
# Generated data (seeded) lives outside the repository, in $BENCH_DIR (default
# /var/tmp/sendtime-bench); DuckDB and Polars are installed from PyPI into a venv there.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
setup 100000000 2000000 /var/tmp/sendtime-bench "$@"
DATA="$BENCH_DIR/gen-$EVENTS-$CONTACTS"
if [ ! -d "$DATA/events" ]; then
  "$BIN" gen --contacts "$CONTACTS" --events "$EVENTS" --seed 1 --out "$DATA"
fi
if ! "$BENCH_DIR/venv/bin/python" -c 'import duckdb, polars' 2> /dev/null; then
  need python3 python3
  python3 -c 'import ensurepip' 2> /dev/null || {
    echo "python3's venv cannot install packages: install python3-venv (e.g. apt-get install python3-venv)" >&2
    exit 1
  }
  rm -rf "$BENCH_DIR/venv"
  python3 -m venv "$BENCH_DIR/venv"
  "$BENCH_DIR/venv/bin/pip" install --quiet duckdb polars
fi
PY="$BENCH_DIR/venv/bin/python"
VERSIONS=$("$PY" -c 'import duckdb, polars; print(f"duckdb {duckdb.__version__}, polars {polars.__version__}")')

# Each engine runs the aggregation twice over: on the precomputed `slot` column, and deriving
# the slot from the `at` timestamp (weekday * 24 + hour), as a query on plain event rows would.
for variant in slot at; do
  if [ $variant = slot ]; then DSLOT=slot; PSLOT="pl.col('slot')"; else
    DSLOT='(isodow("at") - 1) * 24 + hour("at")'
    PSLOT="((pl.col('at').dt.weekday() - 1) * 24 + pl.col('at').dt.hour())"
  fi
  cat > "$BENCH_DIR/duck-$variant.py" <<PYEOF
import duckdb, sys
con = duckdb.connect()
n = con.execute("""
  SELECT count(*) FROM (
    SELECT contact, $DSLOT AS s, count(*) AS n
    FROM read_parquet('$DATA/events/*.parquet')
    WHERE kind IN (6, 7) AND NOT filtered
    GROUP BY ALL)""").fetchone()[0]
print(n, file=sys.stderr)
PYEOF
  cat > "$BENCH_DIR/pl-$variant.py" <<PYEOF
import polars as pl, sys
df = (pl.scan_parquet('$DATA/events/*.parquet')
        .filter(pl.col('kind').is_in([6, 7]) & ~pl.col('filtered'))
        .group_by(['contact', $PSLOT.alias('s')]).len()
        .collect())
print(df.height, file=sys.stderr)
PYEOF
done

# Equal footing before each run: the event files in the page cache, and free memory not held by
# caches of earlier runs (the kernel otherwise reclaims cache while the next engine allocates,
# billing that engine seconds of system time). Needs root; skipped otherwise.
prepare() {
  if [ -w /proc/sys/vm/drop_caches ]; then
    sync
    echo 1 > /proc/sys/vm/drop_caches
  fi
  cat "$DATA"/events/*.parquet "$DATA"/contacts/*.parquet > /dev/null
}

if [ -w /proc/sys/vm/drop_caches ]; then
  echo "the page cache is dropped before each run" >&2
else
  echo "not root: the page cache is NOT dropped before each run (BENCHMARKS.md's runs dropped it)" >&2
fi

# One timed run (a failure stops the script): prints "seconds peak_kb user_s sys_s".
run() {
  prepare
  timed "$@"
}
# The groups each DuckDB and Polars run counted (the last line they print on stderr).
declare -A COUNTED
ENGINES="sendtime sendtime+store duckdb-slot polars-slot duckdb-at polars-at"
[ -n "${BASE_BIN:-}" ] && ENGINES="sendtime-base $ENGINES"
[ -n "${FIXED_CONFIG:-}" ] && ENGINES="sendtime-fixed $ENGINES"
for i in $(seq "$RUNS"); do
  for who in $ENGINES; do
    case $who in
      sendtime) r=$(run "$BIN" --data "$DATA" profiles --rebuild --dry-run) ;;
      sendtime-base) r=$(run "$BASE_BIN" ${BASE_CONFIG:+--config "$BASE_CONFIG"} --data "$DATA" profiles --rebuild --dry-run) ;;
      sendtime-fixed) r=$(run "$BIN" --config "$FIXED_CONFIG" --data "$DATA" profiles --rebuild --dry-run) ;;
      sendtime+store) r=$(run "$BIN" --data "$DATA" profiles --rebuild) ;;
      duckdb-*) r=$(run "$PY" "$BENCH_DIR/duck-${who#*-}.py") ;;
      polars-*) r=$(run "$PY" "$BENCH_DIR/pl-${who#*-}.py") ;;
    esac
    case $who in duckdb-* | polars-*) COUNTED[$who]=$(tail -1 "$BENCH_DIR/err.txt") ;; esac
    record "$who" "$r"
    echo "run $i $who: $t s wall, $u s user, $sy s sys, $m KB peak" >&2
  done
done
# DuckDB and Polars must have counted the same groups for each variant.
for variant in slot at; do
  if [ "${COUNTED[duckdb-$variant]}" != "${COUNTED[polars-$variant]}" ]; then
    echo "DuckDB counted ${COUNTED[duckdb-$variant]} groups and Polars ${COUNTED[polars-$variant]} ($variant): their times measure different work" >&2
    exit 1
  fi
done
table "$RUNS" $ENGINES
echo
echo "$EVENTS events, $CONTACTS contacts ($VERSIONS, $(nproc) cores, $(date -u +%Y-%m-%d))"

# Incremental update: 1M new events (a separately generated part for the same contacts) added
# to profiles held in memory, the delta stored; the rebuild before each run is not timed.
NEW="$BENCH_DIR/gen-1000000-$CONTACTS"
[ -d "$NEW/events" ] || "$BIN" gen --contacts "$CONTACTS" --events 1000000 --seed 2 --out "$NEW" >/dev/null
echo
cargo bench --quiet --bench incremental -- "$DATA" "$NEW" "$RUNS" 2>/dev/null
