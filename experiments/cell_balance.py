"""Would choosing *which* accepted samples to keep close the digits CAS gap? (docs/sampling.md,
eighth and ninth attempts)

    .venv/bin/python -m experiments.cell_balance --out runs/cell-balance
        [--settings n1:1,n1:4,n1.5:1,n1.5:4] [--seeds 0,1,2] [--generator G] [--cofilter V]

A setting ``nS:P`` draws P x 1,000 latents per class from N(0, S²I) and keeps the validator's
accepted ones (confidence >= 0.99), as ``experiments.latent_prior`` does. With P = 1 the first
900 accepted per class are kept (the pipeline's behaviour). With P > 1 the 900 are chosen to
follow the real distribution: each accepted sample goes to the Voronoi cell of its nearest real
image in the *validator's* reference bank (500 MNIST training digits per class, so every cell
holds the same real mass), and cells are emptied round-robin in random order. A generator that
over-produces typical shapes fills a few cells many times over; balancing spends the budget on
the rarer shapes it does produce. ``nS:Pf`` keeps the first 900 accepted of the larger pool.

``nS:Ph`` keeps instead the 900 accepted samples per class the validator is least confident of
(all still >= 0.99): the hardest it lets through. A trailing ``e`` (``n1.5:1e``, ``n1.5:4he``)
also asks a second classifier, ``--cofilter`` (trained apart from the validator and the judge),
to be as sure: boundary samples both read the same way stay, those only the validator is sure
of go.

The choice uses the validator (and the co-filter) only, so the judge, which measures agreement,
density and coverage of the 900 kept per class, stays independent. CAS: the studies' LeNet on
the kept samples, tested on the MNIST test set, beside 900 real training digits per class.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from experiments.latent_prior import CAS_PER_CLASS, MNIST, THRESHOLD, run_study
from kepkreator.thresholds import sure_of

PER_CLASS_DRAW = 1000


def nearest_cell(features: np.ndarray, real: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of each row's nearest real feature row."""
    out = np.empty(len(features), np.int64)
    r2 = (real * real).sum(1)
    for lo in range(0, len(features), chunk):
        part = features[lo:lo + chunk]
        out[lo:lo + chunk] = (r2[None, :] - 2 * part @ real.T).argmin(1)
    return out


def balanced_pick(cells: np.ndarray, budget: int, rng) -> np.ndarray:
    """Positions of up to ``budget`` rows taken round-robin over cells, cells and rows within
    them in random order: every cell gives one before any gives a second."""
    order = rng.permutation(len(cells))
    rank = np.empty(len(cells), np.int64)  # how many rows of the same cell came before
    seen: dict[int, int] = {}
    for i in order:
        rank[i] = seen.get(int(cells[i]), 0)
        seen[int(cells[i])] = rank[i] + 1
    tiebreak = rng.permutation(int(cells.max()) + 1)[cells]  # cells in random order per round
    chosen = np.lexsort((tiebreak, rank))[:budget]
    return np.sort(chosen)


def measure(setting: str, seed: int, bundles, test, cofilter=None) -> dict:
    from kepkreator.cas import train_and_test
    from kepkreator.data import Dataset
    from kepkreator.evaluate import judge_report
    generator, validator, judge = bundles
    scale, choice = setting[1:].split(":")
    pool = float(choice.rstrip("cfhe"))
    mode = "h" if "h" in choice else "f" if "f" in choice or pool == 1 else "c"
    scale = float(scale)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(generator.class_set.num_classes), int(pool * PER_CLASS_DRAW))
    z = generator.sample_latent(rng, len(labels), scale)
    images = generator.generate(z, labels)
    probs, features = validator.scores(images)
    accepted = sure_of(probs, labels, THRESHOLD)
    if "e" in choice:  # a second opinion: the co-filter must be as sure of the label
        accepted &= sure_of(cofilter.probabilities(images), labels, THRESHOLD)
    bank = validator.reference_bank()
    kept, cells_used = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(accepted & (labels == c))
        if mode == "f":
            kept.append(rows[:CAS_PER_CLASS])
            continue
        if mode == "h":  # the least confident of the accepted: the validator's hardest
            kept.append(np.sort(rows[np.argsort(probs[rows, c], kind="stable")[:CAS_PER_CLASS]]))
            continue
        real, _ = bank.of_class(int(c))
        cells = nearest_cell(features[rows], real)
        kept.append(rows[balanced_pick(cells, CAS_PER_CLASS, rng)])
        cells_used.append(len(np.unique(cells)) / len(real))
    kept = np.concatenate(kept)
    chosen = np.zeros(len(labels), bool)
    chosen[kept] = True
    report = judge_report(judge, images, labels, chosen, generator.class_set.chars)
    cas = train_and_test(Dataset(images[kept], labels[kept], generator.class_set), test, seed)
    return {"setting": setting, "seed": seed, "accepted": float(accepted.mean()),
            "validator_cells_reached": float(np.mean(cells_used)) if cells_used else None,
            "judge_agreement_kept": report["accepted"]["agreement"],
            "density": report["accepted"]["density"], "coverage": report["accepted"]["coverage"],
            "cas": cas["accuracy"], "cas_train_samples": len(kept)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settings", default="n1:1,n1:4,n1.5:1,n1.5:4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--generator", default="default:digits")
    parser.add_argument("--cofilter", help="validator bundle for the settings ending in e")
    args = parser.parse_args(argv)
    if not args.cofilter and any(s.endswith("e") for s in args.settings.split(",")):
        parser.error("settings ending in e need --cofilter")

    from kepkreator.data import load_sources
    from kepkreator.models.bundle import load_bundle
    bundles = (load_bundle(args.generator, "generator"),
               *(load_bundle("default:digits", kind) for kind in ("validator", "judge")))
    cofilter = load_bundle(args.cofilter, "validator") if args.cofilter else None
    train = load_sources([f"mnist:train@{MNIST}"], "digits")
    test = load_sources([f"mnist:test@{MNIST}"], "digits")
    args.out.mkdir(parents=True, exist_ok=True)
    run_study(args.out, args.seeds, args.settings, train, test,
              lambda setting, seed: measure(setting, seed, bundles, test, cofilter))


if __name__ == "__main__":
    main()
