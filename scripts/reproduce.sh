#!/usr/bin/env bash
# Reproduce the benchmark runs of docs/results.md: for each config, run the whole experiment into
# runs/<config>/ and copy its results.json to docs/results/<config>.json, printing the wall time.
# A run folder that already holds a run is continued (--resume: an interrupted run goes on, a
# finished one is kept); RUN_FLAGS=--overwrite runs it again from scratch.
#   bash scripts/reproduce.sh quickstart ad_bandit dpt_linear_bandit dpt_bandit
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/results
for name in "$@"; do
  start=$(date +%s)
  icrl run --quiet --config "configs/$name.yaml" --out "runs/$name" ${RUN_FLAGS:---resume}
  echo "$name: wall $(( $(date +%s) - start )) s"
  cp "runs/$name/results.json" "docs/results/$name.json"
  if [ -f "runs/$name/results_offline.json" ]; then
    mkdir -p docs/results/offline && cp "runs/$name/results_offline.json" "docs/results/offline/$name.json"
  fi
done
