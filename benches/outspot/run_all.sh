#!/bin/sh
# The Outspot model study of issue 15 (REPORT.md), rerun in seconds; builds nothing.
#   OUTSPOT_CSV=path/to/outspot-opens.csv PY=python-with-numpy-and-polars benches/outspot/run_all.sh
# The test period is read only by replicate.py (the current model and the baselines, to check
# the replication against `sendtime backtest`); no variant is scored on it.
set -e
cd "$(dirname "$0")"
PY=${PY:-python3}
: "${OUTSPOT_CSV:?set OUTSPOT_CSV to Outspot's opens (user_id,opened): they are not in this repository}"
export OUTSPOT_CSV
BIN=${SENDTIME:-${CARGO_TARGET_DIR:-../../target}/release/sendtime}
OUT=${OUT:-/tmp/sendtime-outspot}
mkdir -p "$OUT"
"$BIN" --config ../../webhooks.toml backtest --split 2022-07-01 --events "$OUTSPOT_CSV" > "$OUT/ref_table.txt"
"$PY" replicate.py | tee "$OUT/replicate.out"
"$PY" v2.py | tee "$OUT/v2.out"   # fitting procedures (nested: each fit sees only data before its window)
"$PY" v3.py | tee "$OUT/v3.out"   # scoring-time variants (fixed values, small grids)
"$PY" v4.py | tee "$OUT/v4.out"   # weekday-conditioned prior; early/late window split
