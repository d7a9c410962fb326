# Shared by the benchmark scripts (sourced): their arguments and release build, one timed run's
# figures collected per engine, and the table of their medians.

# setup EVENTS CONTACTS DIR "$@": EVENTS, CONTACTS and RUNS (default 3) from the script's first
# three arguments (defaults: the first two given here), the rest in REST; BENCH_DIR (default
# DIR, created); BIN, the release build, built now (in CARGO_TARGET_DIR, default
# /var/cache/sendtime-release).
setup() {
  local events=$1 contacts=$2 dir=$3
  shift 3
  need /usr/bin/time time
  EVENTS=${1:-$events}
  CONTACTS=${2:-$contacts}
  RUNS=${3:-3}
  shift $(( $# < 3 ? $# : 3 ))
  REST=("$@")
  BENCH_DIR=${BENCH_DIR:-$dir}
  mkdir -p "$BENCH_DIR"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-release}"
  BIN="$CARGO_TARGET_DIR/release/sendtime"
  cargo build --release --quiet
}

# need TOOL PACKAGE: stop, saying what to install, unless TOOL is on this machine.
need() {
  command -v "$1" > /dev/null || {
    echo "$1 is needed and not found: install it (e.g. apt-get install $2)" >&2; exit 1; }
}

# at_exit COMMAND: run COMMAND when the script ends, however it ends (one trap for every
# helper's and script's commands: a second `trap ... EXIT` replaced the first); one that
# fails does not keep the others from running.
AT_EXIT=()
at_exit() {
  AT_EXIT+=("$1")
  trap 'for c in "${AT_EXIT[@]}"; do eval "$c" || true; done' EXIT
}

# remove_at_exit PATH...: remove each PATH when the script ends (quoted for `eval`, whatever
# characters the paths hold).
remove_at_exit() {
  at_exit "rm -rf $(printf '%q ' "$@")"
}

# standin JSON: the HubSpot stand-in serving JSON's events, its limits lifted, until the script
# ends; $BENCH_DIR/webhooks.toml has a connector pointed at it, whose token is exported.
standin() {
  # An earlier run's file would give its address before this one's is written.
  rm -f "$BENCH_DIR/standin.txt"
  "$BIN" hubspot-standin --events "$1" --limit-per-10s 1000000 --daily-limit 4000000000 \
    > "$BENCH_DIR/standin.txt" 2> "$BENCH_DIR/standin.err" &
  STANDIN=$!
  at_exit "kill $STANDIN 2>/dev/null || true"
  until URL=$(grep -o 'http://[^ ]*' "$BENCH_DIR/standin.txt"); do
    kill -0 $STANDIN || {
      echo "the stand-in did not start:" >&2; tail -20 "$BENCH_DIR/standin.err" >&2; exit 1; }
    sleep 0.2
  done
  cat > "$BENCH_DIR/webhooks.toml" <<EOF
version = 1
[server]
public_url = "https://hooks.example.com"
[[connector]]
id = "main"
portal_id = 1
app_id = 2
client_secret_env = "HS_BENCH_SECRET"
access_token_env = "HS_BENCH_TOKEN"
api_base = "$URL"
requests_per_10s = 10000
[[webhook]]
id = "w"
type = "IMMEDIATE"
workflow_id = 3
EOF
  export HS_BENCH_TOKEN=standin-token HS_BENCH_SECRET=unused
}

# timed CMD...: run CMD once, its output in $BENCH_DIR/out.txt and err.txt (a failure stops the
# script, showing the error: called as `r=$(timed ...)`, not inside another command's
# arguments, whose status would hide it); prints "seconds peak_kb user_s sys_s" from
# /usr/bin/time.
timed() {
  /usr/bin/time -f "%e %M %U %S" -o "$BENCH_DIR/time.txt" "$@" \
    >"$BENCH_DIR/out.txt" 2>"$BENCH_DIR/err.txt" || {
    echo "failed: $*" >&2; tail -20 "$BENCH_DIR/err.txt" >&2; exit 1; }
  cat "$BENCH_DIR/time.txt"
}

# cold FILE COMMAND...: `timed COMMAND` with $STORE emptied and FILE read once just before,
# so every engine finds its input in the page cache (called as `r=$(cold ...)`).
cold() {
  cat "$1" > /dev/null
  shift
  rm -rf "$STORE"
  timed "$@"
}

# fresh_import BIN CSV: `BIN import csv CSV` (columns contact, time and kind), [`cold`].
fresh_import() {
  cold "$2" "$1" --config webhooks.toml --data "$STORE" import csv "$2" \
    --contact contact --time time --kind kind
}

# round_order ROUND ENGINE...: the engines in order, reversed in every other round (an engine
# run after one that used gigabytes pays for the kernel's reclaiming them, whichever it is).
round_order() {
  local round=$1
  shift
  if [ $((round % 2)) = 0 ]; then
    printf '%s\n' "$@" | tac | tr '\n' ' '
  else
    echo "$@"
  fi
}

# Per engine: wall seconds, peak RSS (KB), user and system seconds of every run so far.
declare -A T M U S

# record WHO "seconds peak_kb user_s sys_s": add one run to WHO's figures; sets t m u sy.
record() {
  read -r t m u sy <<< "$2"
  T[$1]="${T[$1]:-} $t"; M[$1]="${M[$1]:-} $m"; U[$1]="${U[$1]:-} $u"; S[$1]="${S[$1]:-} $sy"
}

# The median of the numbers on standard input, separated by spaces or lines.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# table RUNS ENGINE...: the markdown table of each engine's medians.
table() {
  local runs=$1 who
  shift
  echo "| engine | wall s, median of $runs | user s | sys s | peak RSS MB |"
  echo "|---|---|---|---|---|"
  for who in "$@"; do
    local t m u sy
    t=$(echo "${T[$who]}" | median); m=$(echo "${M[$who]}" | median)
    u=$(echo "${U[$who]}" | median); sy=$(echo "${S[$who]}" | median)
    echo "| $who | $t | $u | $sy | $((m / 1024)) |"
  done
}

# alternate BENCH ROWS RUNS MODE...: the bench executable BENCH (built now) writes ROWS rows
# ("gen DIR ROWS"), then reads them once per MODE in each of RUNS rounds, one process per run,
# alternating; it prints "MODE SECONDS" for what it times. Prints each run's "round mode
# seconds peak_kb", then each mode's medians.
alternate() {
  local bench=$1 rows=$2 runs=$3 built bin run mode secs kb
  shift 3
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/sendtime-release}"
  built=$(cargo bench --bench "$bench" --no-run 2>&1) || { echo "$built" >&2; exit 1; }
  bin=$(echo "$built" | grep -o "([^)]*$bench-[0-9a-f]*)" | tr -d '()') || {
    echo "no bench executable in cargo's output:" >&2; echo "$built" >&2; exit 1; }
  ALTERNATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$bench-bench.XXXXXX")
  remove_at_exit "$ALTERNATE_DIR"
  "$bin" gen "$ALTERNATE_DIR/data" "$rows"
  for run in $(seq "$runs"); do
    for mode in "$@"; do
      /usr/bin/time -f "%M" -o "$ALTERNATE_DIR/rss" "$bin" "$mode" "$ALTERNATE_DIR/data" \
        > "$ALTERNATE_DIR/out"
      echo "$run $(cat "$ALTERNATE_DIR/out") $(cat "$ALTERNATE_DIR/rss")"
    done
  done | tee "$ALTERNATE_DIR/runs"
  for mode in "$@"; do
    secs=$(awk -v m="$mode" '$2 == m { print $3 }' "$ALTERNATE_DIR/runs" | median)
    kb=$(awk -v m="$mode" '$2 == m { print $4 }' "$ALTERNATE_DIR/runs" | median)
    echo "$mode: median $secs s, peak RSS median $((kb / 1024)) MB ($rows rows, $runs runs)"
  done
}
