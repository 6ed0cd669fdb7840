#!/usr/bin/env bash
# Regenerate every number and plot the README quotes, from the committed configs.
#   ./fleml bench-all        (runs this after setup; takes a long time on 2 cores)
# Each step writes benchmarks/results/<name>.json (and sweep.md, the README's table);
# the README's plots come from a default `fleml-node simulate` run kept in
# benchmarks/results/simulate/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"

run() { echo; echo "== $*"; "$@"; }

# benchmark-only packages (TenSEAL for the CKKS comparison); pip skips what is installed
run python -m pip install -q -r requirements-bench.txt

run python benchmarks/gas_report.py
run python benchmarks/storage_bench.py
run python benchmarks/learning_bench.py
run python benchmarks/defense_bench.py
run python benchmarks/round_bench.py
run python benchmarks/audit_bench.py
run python benchmarks/verify_bench.py
run python benchmarks/explorer_bench.py
run python benchmarks/chain_rounds.py
run fleml-node simulate --out benchmarks/results/simulate
run python benchmarks/sweep.py
# issue 14: every attack against all seven defenses (quick tables; the full suite is
# `python benchmarks/effectiveness.py --device cuda --workers N` on a GPU machine) and
# FLEML's flag tests ablated on recorded rounds
run python benchmarks/effectiveness.py --quick --workers 2
run python benchmarks/detection_ablation.py --seeds 0 --datasets mnist
run python benchmarks/detection_ablation.py --seeds 0 --datasets fashion_mnist \
    --out benchmarks/results/detection_ablation_fashion_mnist.json
# FLEML's weighting taken apart on the quick suite's cells (the clean-gap analysis)
run python benchmarks/weighting_ablation.py --workers 2
# update compression (fp16/int8/top-k) against dense fp32 and a CKKS update (TenSEAL)
run python benchmarks/compression_bench.py --jobs 2
# network namespaces need root: the fault table (tests/hosts) is skipped otherwise
if [ "$(id -u)" = 0 ]; then run python benchmarks/faults.py; else echo "== faults: skipped (needs root)"; fi
