#!/usr/bin/env bash
# Config validation at scale (issue 16): `sendtime validate` on a file with N webhooks, each
# with one mistake, so every one is reported. Median of RUNS runs, in seconds.
#
#   benches/validate.sh [N] [RUNS]      (default 20000 5)
#
# With BASE_BIN=path/to/an/older/sendtime, that build runs alongside, alternating, so a change
# is measured against the code before it in one run. Uses the debug build, as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bc > /dev/null || { echo "bc is needed: install it (e.g. apt-get install bc)" >&2; exit 1; }
N=${1:-20000}
RUNS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-target}"
cargo build --quiet --bin sendtime
BIN="$CARGO_TARGET_DIR/debug/sendtime"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CONFIG="$WORK/many.toml"
{
  printf 'version = 1\n[server]\npublic_url = "https://hooks.example.com"\n'
  printf '[[connector]]\nid = "main"\nportal_id = 1\napp_id = 1\nclient_secret_env = "S"\naccess_token_env = "T"\n'
  for ((i = 0; i < N; i++)); do
    printf '[[webhook]]\nid = "w%d"\ntype = "NEXT_24_HOURS"\nworkflow_id = -1\n' "$i"
  done
} >"$CONFIG"
echo "$(wc -c <"$CONFIG") bytes, $N mistakes"

run() { # binary -> seconds; checks every mistake was reported
  local start end reported
  start=$(date +%s.%N)
  reported=$("$1" validate "$CONFIG" 2>&1 | grep -c 'must be between 1 and' || true)
  end=$(date +%s.%N)
  [ "$reported" -eq "$N" ] || { echo "$1 reported $reported of $N mistakes" >&2; exit 1; }
  echo "$end - $start" | bc
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -a now base
for ((r = 0; r < RUNS; r++)); do
  now+=("$(run "$BIN")")
  if [ -n "${BASE_BIN:-}" ]; then base+=("$(run "$BASE_BIN")"); fi
done
m_now=$(printf '%s\n' "${now[@]}" | median)
echo "sendtime validate: median ${m_now} s of ${RUNS} (${now[*]})"
if [ -n "${BASE_BIN:-}" ]; then
  m_base=$(printf '%s\n' "${base[@]}" | median)
  echo "base build:        median ${m_base} s of ${RUNS} (${base[*]})"
  echo "ratio base/now: $(echo "scale=1; $m_base / $m_now" | bc)"
fi
