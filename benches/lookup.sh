#!/usr/bin/env bash
# A contact lookup against an archive of ROWS plan and outcome rows, read as lookups read
# before (`whole`: every row converted, then filtered) and now (`parts`: each part filtered
# first), alternating, one process per run. Prints each run's wall time of the lookup and the
# process's peak RSS, then the medians.
#
# benches/lookup.sh [ROWS (default 1000000)] [RUNS (default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
alternate lookup "${1:-1000000}" "${2:-5}" whole parts
