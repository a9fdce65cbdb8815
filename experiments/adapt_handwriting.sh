#!/usr/bin/env bash
# Your own handwriting, measured: the README's "Your own handwriting" figures. The photographed
# letters of ../shared/data/handwritten_62 (both cases, linked into one folder tree so the
# case-merged `letters` class set reads them) stand in for a user's photos: 20% are held out by
# image hash; the shipped letters generator is fine-tuned on the rest (--init-from) and, for
# comparison, the same GAN is trained from scratch; all three are measured against the held-out
# photos by the shipped letters validator. Re-running resumes from checkpoints.
#   bash experiments/adapt_handwriting.sh
# The README's figures were measured when default:letters was the 8-epoch letters generator
# (sha256 6540d457...); INIT=runs/letters-modes/generator (jobs/train_shipped.sh letters makes
# it) repeats them, the default fine-tunes today's shipped generator.
set -euo pipefail
cd "$(dirname "$0")/.."
KK=".venv/bin/kepkreator"
DATA=${DATA:-../shared/data}
TREE=runs/handwritten62-letters
mkdir -p "$TREE"
for folder in "$DATA"/handwritten_62/[A-Za-z]; do
  ln -sfn "$(cd "$folder" && pwd)" "$TREE/$(basename "$folder")"
done
COMMON=(--class-set letters --data "folder@$TREE" --holdout 0.2 --modes-per-class 3 --epochs 40
        --batch-size 64 --diff-augment --validator default:letters --eval-per-class 200)
INIT=${INIT:-default:letters}
$KK train gan "${COMMON[@]}" --init-from "$INIT" --out runs/handwriting-finetuned
$KK train gan "${COMMON[@]}" --out runs/handwriting-scratch
for generator in "$INIT" runs/handwriting-finetuned runs/handwriting-scratch; do
  name=$(basename "${generator#default:}")
  $KK evaluate --generator "$generator" --validator default:letters -n 5200 --latent-scale 1 \
      --real "folder@$TREE" --real-holdout 0.2 --json-out "runs/handwriting-eval-$name.json"
done
