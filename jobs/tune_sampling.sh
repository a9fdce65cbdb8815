#!/usr/bin/env bash
# Choose the shipped generator's latent scale by CAS on held-out validation data (10% of the
# training source by hash; the test set is not touched) and record it in the generator's card,
# where the pipeline picks it up as the default. Resumes: finished scales are reused.
#   bash jobs/tune_sampling.sh digits|letters
# Letters: the letters study tests on the 10% hash holdout of the bundles' sources, so that
# holdout is reserved (left out) and the validation 10% is drawn from the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
KK=".venv/bin/kepkreator"
DATA=${DATA:-../shared/data}
SCALES=${SCALES:-1,1.5,2,2.5,3}
case "${1:-digits}" in
digits)
  # The shipped card's scan: scale and threshold together, 3 seeds (a seed's spread is about
  # the differences between neighbouring settings).
  $KK tune-sampling --class-set digits --data mnist:train@$DATA/mnist --holdout 0.1 \
      --scales 1,1.25,1.5,1.75,2 --thresholds 0.9,0.99,0.999 --seeds 0,1,2 \
      --out runs/sampling-digits --update-card
  ;;
letters)
  E="$DATA/emnist"
  $KK tune-sampling --class-set letters --data emnist-byclass:test@$E --data emnist-bymerge:test@$E \
      --data emnist-letters:test@$E --data emnist-letters:train@$E \
      --data emnist-balanced:train@$E --data emnist-balanced:test@$E \
      --reserve-holdout 0.1 --holdout 0.1 --min-confidence 0.5 \
      --scales "$SCALES" --seeds 0 --out runs/sampling-letters --update-card
  ;;
esac
