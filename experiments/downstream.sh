#!/usr/bin/env bash
# The downstream study behind the README's "Is the data worth training on?" tables: a fixed
# reference classifier trained per setting (a, b, c, c_aug, d, d_aug, e, e_aug) x 3 seeds,
# tested on real data, the subset-only generator trained, run through the pipeline and read
# back from its Parquet output on the way. Everything lands in runs/downstream-<set>/;
# re-running resumes.
#   bash experiments/downstream.sh digits|letters
set -euo pipefail
cd "$(dirname "$0")/.."
KK=".venv/bin/kepkreator"
DATA=${DATA:-../shared/data}
case "${1:-digits}" in
digits)
  M="$DATA/mnist"
  $KK downstream --class-set digits --data mnist:train@$M --eval-data mnist:test@$M \
      --out runs/downstream-mnist --update-card
  ;;
letters)
  # The shipped letters bundles' sources and hash holdout, so the test images are ones the
  # shipped generator and validator never saw.
  E="$DATA/emnist"
  $KK downstream --class-set letters --data emnist-byclass:test@$E --data emnist-bymerge:test@$E \
      --data emnist-letters:test@$E --data emnist-letters:train@$E \
      --data emnist-balanced:train@$E --data emnist-balanced:test@$E --holdout 0.1 \
      --subset-gan-epochs 60 --subset-modes-per-class 3 --min-confidence 0.5 \
      --out runs/downstream-letters-modes-e --update-card
  ;;
esac
