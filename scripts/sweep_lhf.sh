#!/usr/bin/env bash
# The LHF paper's sweeps on one LHF config: lambda of U = Improvement + lambda * Stability over
# (0, 0.5, 1, 2) with linear probabilities, then the softmax temperature alpha over (0.1, 0.25, 0.5, 1)
# at lambda 1. Each point is a whole run (every seed of the config) into runs/<config>_<point>/,
# its results.json copied to docs/results/<config>_<point>.json. A point's folder that already holds
# a run is continued (--resume); RUN_FLAGS=--overwrite runs it again from scratch.
#   bash scripts/sweep_lhf.sh darkroom_ad_noisy_lhf [seeds=0]   (extra words are config overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
points=("lam0:filter.lam=0" "lam0.5:filter.lam=0.5" "lam1:filter.lam=1" "lam2:filter.lam=2"
        "softmax0.1:filter.mode=softmax filter.alpha=0.1" "softmax0.25:filter.mode=softmax filter.alpha=0.25"
        "softmax0.5:filter.mode=softmax filter.alpha=0.5" "softmax1:filter.mode=softmax filter.alpha=1")
mkdir -p docs/results
for point in "${points[@]}"; do
  tag=${point%%:*}
  start=$(date +%s)
  # shellcheck disable=SC2086  # the point's overrides are separate words
  icrl run --quiet --config "configs/$name.yaml" --out "runs/${name}_$tag" ${RUN_FLAGS:---resume} ${point#*:} "$@"
  echo "${name}_$tag: wall $(( $(date +%s) - start )) s"
  cp "runs/${name}_$tag/results.json" "docs/results/${name}_$tag.json"
done
