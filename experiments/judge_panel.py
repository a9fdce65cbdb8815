"""Does a second opinion in the filter keep samples a person would label the same way, or only
samples one judge likes? (docs/sampling.md, tenth attempt)

    .venv/bin/python -m experiments.judge_panel --out runs/judge-panel
        --cofilters A=runs/cofilter/validator,B=runs/cofilter-aug/validator
        --judges default:digits,runs/judge-aug/validator,runs/judge-mlp/validator
        [--realism 1,0.8] [--cas] [--settings n1.5:1,n2:2] [--seeds 0,1,2]

Each setting ``nS:P`` draws P x 1,000 latents per class from N(0, S²I) exactly as
``experiments.cell_balance`` does (same seeds, same samples). Each filter -- the validator
alone, then the validator with each co-filter -- keeps the first 900 samples per class that
every classifier in it gives the requested label with confidence >= 0.99; ``--realism R`` adds
the pipeline's realism filter at strength R beside the validator, for comparison. Every judge of the
panel then measures every kept set; a panel of judges trained in different ways (architecture,
augmentation, seed) tells a filter that removes unreadable samples from one that removes what a
judge of its own kind dislikes. ``--cas`` also trains the studies' LeNet on each kept set and
tests it on the MNIST test set (``experiments.cell_balance``'s CAS).
``OUT/<setting>-s<seed>-<what>.png`` show the samples the
co-filter drops and the kept ones the panel's majority rejects, to look at.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.cell_balance import PER_CLASS_DRAW, THRESHOLD
from experiments.latent_prior import CAS_PER_CLASS
from kepkreator.thresholds import sure_of


def draw(generator, setting: str, seed: int):
    """The candidates of ``experiments.cell_balance``'s setting ``nS:P`` at ``seed``."""
    scale, pool = (float(x) for x in setting[1:].split(":"))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(generator.class_set.num_classes), int(pool * PER_CLASS_DRAW))
    z = generator.sample_latent(rng, len(labels), scale)
    images = generator.generate(z, labels)
    return images, labels


def first_per_class(accepted: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """Mask of the first ``budget`` accepted samples of each class, the pipeline's choice."""
    kept = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        kept[np.flatnonzero(accepted & (labels == c))[:budget]] = True
    return kept


def save_grid(path: Path, images: np.ndarray, limit: int = 100) -> None:
    from kepkreator.imageio import grid_png
    if len(images):
        shown = images[:limit]
        path.write_bytes(grid_png(shown, rows=int(np.ceil(len(shown) / 10)), scale=2))


def measure(setting, seed, generator, validator, cofilters, judges, out: Path,
            realism=(), test=None) -> list[dict]:
    images, labels = draw(generator, setting, seed)
    probs, features = validator.scores(images)
    sure = {"validator": sure_of(probs, labels, THRESHOLD)}
    sure.update({name: sure_of(c.probabilities(images), labels, THRESHOLD)
                 for name, c in cofilters.items()})
    bank = validator.reference_bank()
    sure.update({f"realism {r:g}": bank.inside(features, labels, r) for r in realism})
    agrees = {name: j.probabilities(images).argmax(1) == labels for name, j in judges.items()}
    majority_rejects = np.sum([~a for a in agrees.values()], axis=0) * 2 > len(judges)
    base = first_per_class(sure["validator"], labels, CAS_PER_CLASS)
    rows = []
    for name in sure:
        accepted = sure["validator"] & (sure[name] if name != "validator" else True)
        kept = first_per_class(accepted, labels, CAS_PER_CLASS)
        tag = f"{setting.replace(':', '_')}-s{seed}-{name.replace(' ', '')}"
        rows.append({"setting": setting, "seed": seed, "filter": name,
                     "accepted": float(accepted.mean()), "kept": int(kept.sum()),
                     "judges": {j: float(a[kept].mean()) for j, a in agrees.items()},
                     "majority_rejects": float(majority_rejects[kept].mean())})
        if test is not None:
            from kepkreator.cas import train_and_test
            from kepkreator.data import Dataset
            rows[-1]["cas"] = train_and_test(Dataset(images[kept], labels[kept],
                                                     generator.class_set), test, seed)["accuracy"]
        save_grid(out / f"{tag}-majority-rejects.png", images[kept & majority_rejects])
        if name != "validator":
            save_grid(out / f"{tag}-drops.png", images[base & ~sure[name]])
    return rows


def summary(rows: list[dict], judges: list[str]) -> str:
    cas = all("cas" in r for r in rows)
    lines = ["| setting | filter | accepted | " + " | ".join(judges) + " | majority rejects |"
             + (" CAS |" if cas else ""), "|---" * (len(judges) + 4 + cas) + "|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["filter"]), []).append(row)
    for (setting, name), group in groups.items():
        cells = [f"{np.mean([r['judges'][j] for r in group]):.2%}" for j in judges]
        lines.append(f"| {setting} | {name} | {np.mean([r['accepted'] for r in group]):.1%} | "
                     + " | ".join(cells)
                     + f" | {np.mean([r['majority_rejects'] for r in group]):.2%} |"
                     + (f" {np.mean([r['cas'] for r in group]):.2%} ± "
                        f"{100 * np.std([r['cas'] for r in group]):.2f} |" if cas else ""))
    return "\n".join(lines)


def named(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) if "=" in item else (item, item) for item in text.split(",")]
    return {name: ref for name, ref in pairs}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cofilters", required=True, help="NAME=BUNDLE,...")
    parser.add_argument("--judges", required=True, help="[NAME=]BUNDLE,... (a bundle's judge "
                        "if it has one, else its validator)")
    parser.add_argument("--settings", default="n1.5:1,n2:2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--generator", default="default:digits")
    parser.add_argument("--realism", default="", help="realism filter strengths to compare")
    parser.add_argument("--cas", action="store_true", help="CAS of every kept set too")
    args = parser.parse_args(argv)
    realism = [float(r) for r in args.realism.split(",") if r]

    from kepkreator.models.bundle import load_bundle
    generator = load_bundle(args.generator, "generator")
    validator = load_bundle("default:digits", "validator")
    cofilters = {n: load_bundle(ref, "validator") for n, ref in named(args.cofilters).items()}
    judges = {n: load_bundle(ref, "judge" if ref.startswith("default:") else "validator")
              for n, ref in named(args.judges).items()}
    test = None
    if args.cas:
        from experiments.latent_prior import MNIST
        from kepkreator.data import load_sources
        test = load_sources([f"mnist:test@{MNIST}"], "digits")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in args.settings.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            new = measure(setting, seed, generator, validator, cofilters, judges, args.out,
                          realism, test)
            rows += new
            for row in new:
                print(json.dumps(row), flush=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    table = summary(rows, list(judges))
    (args.out / "summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
