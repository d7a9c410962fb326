#!/usr/bin/env bash
# Profile-building benchmark (issue 4): sendtime vs DuckDB vs Python Polars on the same Parquet
# files, side by side, alternating, medians of N runs; peak memory from /usr/bin/time.
#
#   benches/profiles.sh [EVENTS] [CONTACTS] [RUNS]      (default 100000000 2000000 3)
#
# Generated data (seeded) lives outside the repository, in $BENCH_DIR (default
# /var/tmp/sendtime-bench); DuckDB and Polars are installed from PyPI into a venv there.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000000}
CONTACTS=${2:-2000000}
RUNS=${3:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/sendtime-bench}
DATA="$BENCH_DIR/gen-$EVENTS-$CONTACTS"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-release}"
BIN="$CARGO_TARGET_DIR/release/sendtime"
mkdir -p "$BENCH_DIR"

cargo build --release --quiet
if [ ! -d "$DATA/events" ]; then
  "$BIN" gen --contacts "$CONTACTS" --events "$EVENTS" --seed 1 --out "$DATA"
fi
if [ ! -x "$BENCH_DIR/venv/bin/python" ]; then
  python3 -m venv "$BENCH_DIR/venv"
  "$BENCH_DIR/venv/bin/pip" install --quiet duckdb polars
fi
PY="$BENCH_DIR/venv/bin/python"
VERSIONS=$("$PY" -c 'import duckdb, polars; print(f"duckdb {duckdb.__version__}, polars {polars.__version__}")')

cat > "$BENCH_DIR/duck.py" <<PYEOF
import duckdb, sys
con = duckdb.connect()
n = con.execute("""
  SELECT count(*) FROM (
    SELECT contact, slot, count(*) AS n
    FROM read_parquet('$DATA/events/*.parquet')
    WHERE kind IN (6, 7) AND NOT filtered
    GROUP BY contact, slot)""").fetchone()[0]
print(n, file=sys.stderr)
PYEOF
cat > "$BENCH_DIR/pl.py" <<PYEOF
import polars as pl, sys
df = (pl.scan_parquet('$DATA/events/*.parquet')
        .filter(pl.col('kind').is_in([6, 7]) & ~pl.col('filtered'))
        .group_by(['contact', 'slot']).len()
        .collect())
print(df.height, file=sys.stderr)
PYEOF

# One timed run: prints "seconds peak_kb".
run() {
  /usr/bin/time -f "%e %M" -o "$BENCH_DIR/time.txt" "$@" >/dev/null 2>&1
  cat "$BENCH_DIR/time.txt"
}
declare -A T M
for i in $(seq "$RUNS"); do
  for who in sendtime duckdb polars; do
    case $who in
      sendtime) r=$(run "$BIN" --data "$DATA" profiles --rebuild) ;;
      duckdb) r=$(run "$PY" "$BENCH_DIR/duck.py") ;;
      polars) r=$(run "$PY" "$BENCH_DIR/pl.py") ;;
    esac
    T[$who]="${T[$who]:-} ${r% *}"
    M[$who]="${M[$who]:-} ${r#* }"
    echo "run $i $who: ${r% *} s, ${r#* } KB peak" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| engine | median s ($RUNS runs) | peak RSS MB |"
echo "|---|---|---|"
for who in sendtime duckdb polars; do
  t=$(echo "${T[$who]}" | median); m=$(echo "${M[$who]}" | median)
  echo "| $who | $t | $((m / 1024)) |"
done
echo
echo "$EVENTS events, $CONTACTS contacts ($VERSIONS, $(nproc) cores, $(date -u +%Y-%m-%d))"
