#!/usr/bin/env bash
# Do shift and adder blocks reach the front? The operator-type search costed on the illustrative
# edge accelerator with cheap shifts and adds (experiments/digits-cnn-shiftadd-accel.yaml), run
# from scratch in a temporary workdir, with its front and how many blocks of each type its
# members use (the arch column's mNsNaN suffix). The README quotes this output.
# Usage: bash experiments/shiftadd_front.sh [CONFIG]   (default digits-cnn-shiftadd-accel; or
#        digits-cnn-shiftadd, the same search on local-cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-digits-cnn-shiftadd-accel}
work=$(mktemp -d /tmp/hwnas-shiftadd-XXXXXX)
export COLUMNS=${COLUMNS:-140}
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(python -c 'from hwnas.hwmodels.local_cpu import processor_name as p; print(p())'), $(nproc) cores, workdir $work"
start=$(date +%s)
hwnas search "experiments/$config.yaml" --workdir "$work" --quiet
echo "job_seconds: $(( $(date +%s) - start ))"
echo "\$ hwnas front $config"
hwnas front "$config" --workdir "$work"
hwnas front "$config" --workdir "$work" --format json | python -c '
import json, sys
rows = json.load(sys.stdin)
def active_ops(arch):  # the operator of every block the stage depths keep
    return [arch[f"{s}.b{b}.op"] for s in sorted({k.split(".")[0] for k in arch})
            for b in range(arch[f"{s}.depth"])]
ops = [active_ops(r["arch"]) for r in rows]
print(f"front_members: {len(rows)}")
for kind in ("shift", "adder"):
    print(f"front_members_with_{kind}: {sum(kind in o for o in ops)}")'
