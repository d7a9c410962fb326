#!/bin/sh
# The Outspot model study of issue 15 (REPORT.md), rerun in seconds; builds nothing.
#   OUTSPOT_CSV=path/to/outspot-opens.csv PY=python-with-numpy-and-polars benches/outspot/run_all.sh
# The test period is read by replicate.py and relearn.py (the current model and the baselines,
# to check the replication against `sendtime backtest`, frozen and with --relearn) and by
# v5_test.py (the two variants that passed the third study's rule on validation,
# REPORT-v5.md); no other variant is scored on it.
set -e
: "${OUTSPOT_CSV:?set OUTSPOT_CSV to Outspot's opens (user_id,opened): they are not in this repository}"
# Paths given relative to where it was started, made absolute before the cd below (a bare
# name, a command on PATH, is left as it is).
abs() { case $1 in /*) echo "$1" ;; */*) echo "$PWD/$1" ;; *) echo "$1" ;; esac; }
OUTSPOT_CSV=$(abs "$OUTSPOT_CSV")
export OUTSPOT_CSV
# The release build of benches/lib.sh, unless SENDTIME names a binary.
BIN=$(abs "${SENDTIME:-${CARGO_TARGET_DIR:-/var/cache/sendtime-release}/release/sendtime}")
command -v "$BIN" > /dev/null || {
  echo "no sendtime binary at $BIN: build it (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/sendtime-release} cargo build --release) or set SENDTIME" >&2
  exit 1
}
PY=$(abs "${PY:-python3}")
OUT=$(abs "${OUT:-/tmp/sendtime-outspot}")
cd "$(dirname "$0")"
mkdir -p "$OUT"
"$BIN" --config ../../webhooks.toml backtest --split 2022-07-01 --events "$OUTSPOT_CSV" > "$OUT/ref_table.txt"
"$PY" replicate.py | tee "$OUT/replicate.out"
"$PY" relearn.py | tee "$OUT/relearn.out"   # backtest --relearn 30/7/1, with intervals on the model's own figures
"$PY" v2.py | tee "$OUT/v2.out"   # fitting procedures (nested: each fit sees only data before its window)
"$PY" v3.py | tee "$OUT/v3.out"   # scoring-time variants (fixed values, small grids)
"$PY" v4.py | tee "$OUT/v4.out"   # weekday-conditioned prior; early/late window split
"$PY" v5.py | tee "$OUT/v5.out"   # third study: per-contact trust, per-contact prior, day counts
"$PY" v5_test.py | tee -a "$OUT/v5.out"   # the two that passed, on the test period
