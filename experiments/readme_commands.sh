#!/usr/bin/env bash
# The README's sample output: the quickstart job and the three user commands, run from scratch in
# a temporary workdir, with the date and the machine they ran on.
# Usage: bash experiments/readme_commands.sh [LATENCY_BUDGET_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/hwnas-readme-XXXXXX)
budget=${1:-0.8}
export COLUMNS=${COLUMNS:-140}  # tables as a wide terminal shows them
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(python -c 'from hwnas.hwmodels.local_cpu import processor_name as p; print(p())'), $(nproc) cores, workdir $work"
run() { echo "\$ hwnas $*"; hwnas "$@" --workdir "$work" || echo "(exit $?)"; }
run search experiments/digits-cnn.yaml
run front digits-cnn --max-latency-ms "$budget"
run front digits-cnn --max-latency-ms 0.1
run export digits-cnn --max-latency-ms "$budget" --format all --out "$work/exported"
ls "$work/exported"
