#!/usr/bin/env bash
# The README's tuning table: a random search of 8 short trials on 10,000 MNIST training images,
# each scored by the shipped digits validator on 200 samples per digit against MNIST test.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${DATA:-../shared/data}/mnist
.venv/bin/kepkreator tune --class-set digits --data mnist:train@$M --eval-data mnist:test@$M \
    --objective frechet --algorithm random --trials 8 --epochs 2 --max-train-samples 10000 \
    --out runs/tune-mnist
