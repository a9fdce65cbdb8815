#!/usr/bin/env bash
# Choose the shipped generator's latent scale by CAS on held-out validation data (10% of the
# training source by hash; the test set is not touched) and record it in the generator's card,
# where the pipeline picks it up as the default. Resumes: finished scales are reused.
#   bash jobs/tune_sampling.sh digits
# (Letters: the letters study tests on the 10% hash holdout of the bundles' sources, so a scan
# there needs validation data from elsewhere; not wired up yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
KK=".venv/bin/kepkreator"
DATA=${DATA:-../shared/data}
SCALES=${SCALES:-1,1.5,2,2.5,3}
case "${1:-digits}" in
digits)
  $KK tune-sampling --class-set digits --data mnist:train@$DATA/mnist --holdout 0.1 \
      --scales "$SCALES" --seeds 0 --out runs/sampling-digits --update-card
  ;;
esac
