"""Would each class do better at a latent scale of its own? (docs/sampling.md, eleventh attempt)

    .venv/bin/python -m experiments.per_class_scale --scan runs/digits/sampling-second
        --out runs/per-class-scale [--threshold 0.99] [--base 1.5] [--floor 0.998]
        [--rule recall|widest] [--seeds 0,1,2]

Reads a finished ``kepkreator tune-sampling`` scan (its generated sets, their metrics.json and
the per-class validation accuracies of its runs), so every choice is made on validation data:
for each class, among the scanned scales at ``--threshold`` whose kept samples of that class the
judge agrees with at ``--floor``, ``recall`` takes the scale whose synthetic-only classifier
recognised the class's validation images best, ``widest`` the widest scale. The chosen classes'
samples, taken from the scan's sets, make one training set; the studies' LeNet trains on it and
on the ``--base`` scale's set alone, and both are tested on the MNIST test set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.latent_prior import MNIST


def choose_scales(scan: Path, threshold: float, rule: str, floor: float) -> dict[str, float]:
    """{class: scale}, from the scan's files alone (validation data and judge agreement)."""
    rows = json.loads((scan / "sampling.json").read_text())["scales"]
    scales = sorted(r["latent_scale"] for r in rows if r["min_confidence"] == threshold)
    per_scale = {}
    for scale in scales:
        name = f"scale{scale:g}-conf{threshold:g}"
        metrics = json.loads((scan / f"synthetic-{name}" / "metrics.json").read_text())
        recall = np.mean([list(json.loads(p.read_text())["per_class"].values())
                          for p in sorted((scan / "runs").glob(f"{name}-seed*.json"))], axis=0)
        classes = list(metrics["per_class"])
        per_scale[scale] = {c: (metrics["per_class"][c]["judge_agreement_accepted"], recall[i])
                            for i, c in enumerate(classes)}
    chosen = {}
    for c in per_scale[scales[0]]:
        allowed = [s for s in scales if per_scale[s][c][0] >= floor] or scales[:1]
        chosen[c] = (max(allowed) if rule == "widest"
                     else max(allowed, key=lambda s: (per_scale[s][c][1], -s)))
    return chosen


def mixed_set(scan: Path, threshold: float, chosen: dict[str, float]):
    """Each class's samples from the scan's set at its chosen scale."""
    from kepkreator.downstream import concat, read_dataset
    parts = []
    for c, scale in chosen.items():
        data = read_dataset(scan / f"synthetic-scale{scale:g}-conf{threshold:g}", "digits")
        parts.append(data.subset(np.flatnonzero(data.labels == data.class_set.chars.index(c))))
    return concat(*parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scan", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--base", type=float, default=1.5)
    parser.add_argument("--floor", type=float, default=0.998)
    parser.add_argument("--rule", choices=("recall", "widest"), default="recall")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--mnist", default=MNIST)
    args = parser.parse_args(argv)
    from kepkreator.cas import train_and_test
    from kepkreator.data import load_sources
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = choose_scales(args.scan, args.threshold, args.rule, args.floor)
    print("chosen scales:", chosen, flush=True)
    test = load_sources([f"mnist:test@{args.mnist}"], "digits")
    sets = {"base": mixed_set(args.scan, args.threshold, {c: args.base for c in chosen}),
            args.rule: mixed_set(args.scan, args.threshold, chosen)}
    results = {"chosen": chosen, "rule": args.rule, "floor": args.floor, "runs": {}}
    for name, data in sets.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            cached = args.out / f"{name}-seed{seed}.json"
            if cached.is_file():
                run = json.loads(cached.read_text())
            else:
                run = train_and_test(data, test, seed)
                cached.write_text(json.dumps(run))
            results["runs"].setdefault(name, []).append(run)
            print(f"{name} seed {seed}: {100 * run['accuracy']:.2f}%  " + " ".join(
                f"{c}:{100 * v:.1f}" for c, v in run["per_class"].items()), flush=True)
    for name, runs in results["runs"].items():
        accs = [r["accuracy"] for r in runs]
        print(f"{name}: {100 * np.mean(accs):.2f}% ± {50 * (max(accs) - min(accs)):.2f}")
    (args.out / f"summary-{args.rule}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
