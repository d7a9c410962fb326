#!/usr/bin/env bash
# What the lift report reads of an archive of ROWS planned receipts (and twice as many outcome
# rows): as it read before (`whole`: every row of both datasets converted) and now (`lean`:
# keeping the plan columns it needs and the outcomes' sends, a part at a time), alternating, one
# process per run. Prints each run's wall time of the read and the process's peak RSS, then
# the medians.
#
# benches/lift.sh [ROWS (default 1000000)] [RUNS (default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
alternate lift "${1:-1000000}" "${2:-5}" whole lean
