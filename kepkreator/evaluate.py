"""Measure a generator with a validator: agreement, IS/BCIS/WCIS, Frechet distance to real data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kepkreator.data import Dataset
from kepkreator.errors import KepKreatorError
from kepkreator.manifold import CHUNKS, FIGURES, figures_text
from kepkreator.metrics import (ClassStats, class_report, copying_report, frechet_distance,
                                nearest_distances)
from kepkreator.models.bundle import Bundle, load_bundle, require_class_set
from kepkreator.models.card import CARD_NAME
from kepkreator.thresholds import sure_of


def _bundle(ref, kind: str) -> Bundle:
    return ref if isinstance(ref, Bundle) else load_bundle(ref, kind)


def sample_generator(generator, per_class: int, seed: int, batch_size: int = 2048,
                     latent_scale: float = 1.0):
    """Class-balanced samples: z from a seeded generator, labels 0..C-1 each ``per_class`` times."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(generator.class_set.num_classes), per_class)
    z = generator.sample_latent(rng, len(labels), latent_scale)
    return generator.generate(z, labels, batch_size), labels


def shipped_judge(class_set: str) -> str | None:
    """``default:<class_set>`` where a judge is shipped for the class set."""
    from kepkreator.models.bundle import ASSETS
    return f"default:{class_set}" if (ASSETS / class_set / "judge" / CARD_NAME).is_file() else None


def judge_report(judge, images, labels, accepted, labels_text) -> dict:
    """The judge's agreement with the requested labels on every sample and on those the
    validator's filter keeps, per class; and where the judge has a reference bank, the manifold
    FIGURES of both (the first CHUNKS draws of M per class) beside its real-vs-real yardstick."""
    probs, features = judge.scores(images)
    report = {"judge": judge.reference}
    for name, keep in (("generated", np.ones(len(labels), bool)), ("accepted", accepted)):
        stats = ClassStats.from_probabilities(probs[keep], labels[keep],
                                              judge.class_set.num_classes)
        row = class_report(stats, labels_text)
        report[name] = {"agreement": row["agreement"], "samples": row["samples"],
                        "per_class": {k: v["agreement"] for k, v in row["per_class"].items()}}
        bank = judge.reference_bank()
        if bank is not None:
            m = judge.card["reference"]["per_class"]
            rows = np.concatenate([np.flatnonzero(keep & (labels == c))[:CHUNKS * m]
                                   for c in np.unique(labels)])
            fidelity = bank.compare(features[rows], labels[rows], chunk=m)
            report[name].update({k: fidelity[k] for k in FIGURES})
    if judge.reference_bank() is not None:
        yardstick = judge.card["reference"]["yardstick"]
        report["real_vs_real"] = {k: yardstick.get(k) for k in FIGURES}
    return report


def evaluate_generator(generator_ref, validator_ref, per_class: int = 1000, seed: int = 0,
                       real: Dataset | None = None, real_limit: int = 10000,
                       latent_scale: float | None = None, train: Dataset | None = None,
                       judge_ref=None, min_confidence: float | None = None,
                       second_validator_ref: str | None = None) -> dict:
    """``generator_ref``/``validator_ref``: bundle references or already loaded bundles.

    ``latent_scale`` None: the scale the pipeline would use (the card's), so the numbers describe
    the data users get. ``train``: the generator's training images; with ``real`` (held out)
    the report says whether the samples are new or copies of them. ``judge_ref``: an
    independent classifier that reports on the samples and on those the validator's filter at
    ``min_confidence`` (None: the card's, else 0.9) would keep, with the pipeline's second
    validator (``second_validator_ref`` None: the card's ``sampling.second_validator``; "":
    none) as sure of the label."""
    generator, validator = _bundle(generator_ref, "generator"), _bundle(validator_ref, "validator")
    require_class_set(generator, validator.class_set, "generator", "validator class set")
    if train is not None and (real is None or not len(real)):
        raise KepKreatorError("the copying check needs held-out real images as well as the "
                              "training images, to know how near new data falls by chance")
    labels_text = list(generator.class_set.chars)
    if latent_scale is None:
        latent_scale = generator.default_latent_scale
    images, labels = sample_generator(generator, per_class, seed, latent_scale=latent_scale)
    probs = validator.probabilities(images)
    report = {"generator": generator.reference, "validator": validator.reference,
              "class_set": generator.class_set.name, "per_class_requested": per_class,
              "seed": seed, "latent_scale": latent_scale,
              "generated": class_report(ClassStats.from_probabilities(probs, labels), labels_text)}
    if judge_ref is not None:
        judge = _bundle(judge_ref, "judge")
        require_class_set(judge, generator.class_set, "judge", "generator class set")
        if min_confidence is None:  # the card's default threshold (per-class ones aside)
            card_value = (generator.card.get("sampling") or {}).get("min_confidence", 0.9)
            min_confidence = float(card_value.get("default", 0.9) if isinstance(card_value, dict)
                                   else card_value)
        accepted = sure_of(probs, labels, min_confidence)
        if second_validator_ref is None:
            second_validator_ref = (generator.card.get("sampling") or {}).get(
                "second_validator", "")
        if second_validator_ref:
            second = _bundle(second_validator_ref, "second_validator")
            require_class_set(second, generator.class_set, "second validator",
                              "generator class set")
            accepted &= sure_of(second.probabilities(images), labels, min_confidence)
            report["second_validator"] = second.reference
        report["min_confidence"] = min_confidence
        report["judged"] = judge_report(judge, images, labels, accepted, labels_text)
    if real is not None and len(real):
        if train is not None:
            report["copying"] = copying_check(images, labels, train, real, real_limit, seed)
        if len(real) > real_limit:
            real = real.subset(np.random.default_rng(seed).permutation(len(real))[:real_limit])
        report["real"] = real_report(validator.probabilities(real.images), real)
        # Real data of some classes only (photos of a few letters): compared with samples of
        # every class, the BCIS ratio and the Frechet distance would measure the missing classes.
        present = np.unique(real.labels)
        compared = report["generated"]
        if len(present) < generator.class_set.num_classes:
            covered = np.isin(labels, present)
            images, labels, probs = images[covered], labels[covered], probs[covered]
            compared = class_report(ClassStats.from_probabilities(probs, labels), labels_text)
            report["real_classes"] = "".join(labels_text[c] for c in present)
            report["generated_in_real_classes"] = {k: compared[k] for k in ("is", "bcis", "wcis")}
        report["bcis_ratio_generated_to_real"] = compared["bcis"] / report["real"]["bcis"]
        # Equal-size random draws from both: the samples are ordered by class (and real data
        # may be), so a prefix of the larger set would compare a few classes with all of them.
        n = min(len(images), len(real))
        rng = np.random.default_rng(seed)
        report["frechet_distance"] = frechet_distance(
            validator.features(images[rng.permutation(len(images))[:n]]),
            validator.features(real.images[rng.permutation(len(real))[:n]]))
    return report


def real_report(probabilities: np.ndarray, real: Dataset) -> dict:
    """The validator on real images, and where they came from (a holdout says so)."""
    report = class_report(ClassStats.from_probabilities(probabilities, real.labels),
                          list(real.class_set.chars))
    report["source"] = [p.get("source") for p in real.provenance if "source" in p]
    holdout = {k: p[k] for p in real.provenance for k in ("holdout_fraction", "split_seed")
               if k in p}
    if holdout:
        report["holdout"] = holdout
    return report


def evaluate_validator(validator_ref, real: Dataset, top_confusions: int = 8) -> dict:
    """Before a validator filters data for a new domain (your photographed handwriting), check
    that it reads that domain's real images, and which classes it mistakes for which."""
    validator = _bundle(validator_ref, "validator")
    if real.class_set != validator.class_set:
        raise KepKreatorError(f"real data class set {real.class_set.name!r} differs from "
                              f"validator class set {validator.class_set.name!r}")
    probs = validator.probabilities(real.images)
    chars = validator.class_set.chars
    confusion = np.zeros((len(chars), len(chars)), np.int64)
    np.add.at(confusion, (real.labels, probs.argmax(1)), 1)
    true_counts = confusion.sum(1)
    mistakes = sorted(((int(confusion[t, p]), t, p) for t, p in zip(*np.nonzero(confusion))
                       if t != p), key=lambda m: (-m[0], m[1], m[2]))
    return {"validator": validator.reference, "class_set": validator.class_set.name,
            "real": real_report(probs, real),
            "confusions": [{"true": chars[t], "predicted": chars[p], "count": n,
                            "share_of_true": n / int(true_counts[t])}
                           for n, t, p in mistakes[:top_confusions]]}


def format_validator_table(report: dict) -> str:
    real = report["real"]
    lines = [f"{'class':>5} {'n':>6} {'accuracy':>9} {'confidence':>10}"]
    lines += [f"{label:>5} {row['samples']:>6} {row['agreement']:>9.4f} "
              f"{row['mean_confidence']:>10.4f}" for label, row in real["per_class"].items()]
    lines.append(f"{'all':>5} {real['samples']:>6} {real['agreement']:>9.4f} "
                 f"{real['mean_confidence']:>10.4f}")
    if report["confusions"]:
        lines.append("most confused: " + ", ".join(
            f"{c['true']}->{c['predicted']} {c['count']} ({100 * c['share_of_true']:.1f}%)"
            for c in report["confusions"]))
    return "\n".join(lines)


def copying_check(images, labels, train: Dataset, real: Dataset, real_limit: int,
                  seed: int) -> dict:
    """Nearest-training-image distances of the samples against those of held-out real images;
    real images that are also training images are left out, they would be zero by construction."""
    from kepkreator.data.splits import image_hashes
    fresh = real.subset(~np.isin(image_hashes(real.images), image_hashes(train.images)))
    if len(fresh) > real_limit:
        fresh = fresh.subset(np.random.default_rng(seed).permutation(len(fresh))[:real_limit])
    if not len(fresh):
        raise KepKreatorError("every real image is also a training image: the copying check "
                              "needs held-out ones")
    try:
        report = copying_report(nearest_distances(images, labels, train.images, train.labels),
                                nearest_distances(fresh.images, fresh.labels, train.images,
                                                  train.labels))
    except ValueError as exc:
        raise KepKreatorError(f"copying check: {exc}") from None
    return {**report, "train_samples": len(train)}


def record_in_card(bundle_path: str | Path, report: dict, key: str = "evaluation",
                   section: str | None = "metrics") -> None:
    """Put an evaluation into the bundle's card, so the numbers travel with the weights;
    ``section=None`` puts it at the top level (``sampling``, which the pipeline reads)."""
    card_path = Path(bundle_path) / CARD_NAME
    card = json.loads(card_path.read_text())
    summary = {k: v for k, v in report.items() if k not in ("generator",)}
    (card.setdefault(section, {}) if section else card)[key] = summary
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def format_table(report: dict) -> str:
    gen = report["generated"]
    real = report.get("real", {}).get("per_class", {})
    lines = [f"{'class':>5} {'n':>6} {'agreement':>9} {'confidence':>10}"
             + (f" {'real acc':>8}" if real else "")]
    for label, row in gen["per_class"].items():
        line = f"{label:>5} {row['samples']:>6} {row['agreement']:>9.4f} {row['mean_confidence']:>10.4f}"
        if real and label in real:
            line += f" {real[label]['agreement']:>8.4f}"
        lines.append(line)
    lines.append(f"{'all':>5} {gen['samples']:>6} {gen['agreement']:>9.4f} "
                 f"{gen['mean_confidence']:>10.4f}"
                 + (f" {report['real']['agreement']:>8.4f}" if real else ""))
    lines.append(f"generated: IS {gen['is']:.3f}  BCIS {gen['bcis']:.3f}  WCIS {gen['wcis']:.3f}"
                 + (f"  (latent scale {report['latent_scale']:g})"
                    if "latent_scale" in report else ""))
    if "real_classes" in report:
        g = report["generated_in_real_classes"]
        lines.append(f"real data has only the classes {report['real_classes']}: the BCIS ratio "
                     f"and Frechet distance compare the samples of those (IS {g['is']:.3f}  "
                     f"BCIS {g['bcis']:.3f}  WCIS {g['wcis']:.3f})")
    if "real" in report:
        r = report["real"]
        lines.append(f"real:      IS {r['is']:.3f}  BCIS {r['bcis']:.3f}  WCIS {r['wcis']:.3f}"
                     f"  (BCIS ratio {report['bcis_ratio_generated_to_real']:.3f}, "
                     f"Frechet distance {report['frechet_distance']:.3f})")
    if "judged" in report:
        j = report["judged"]
        filters = "validator" + (" and second validator" if "second_validator" in report else "")
        for name in ("generated", "accepted"):
            row = j[name]
            lines.append(f"judge, {name:<9} agreement {row['agreement']:.4f}"
                         + (f"  {figures_text(row)}" if "density" in row else "")
                         + (f"  ({filters} confidence >= {report['min_confidence']:g}: "
                            f"{row['samples']:,} kept)" if name == "accepted" else ""))
        if "real_vs_real" in j:
            lines.append(f"judge, real vs real: {figures_text(j['real_vs_real'])}")
    if "copying" in report:
        c = report["copying"]
        ratio = "n/a" if c["distance_ratio"] is None else f"{c['distance_ratio']:.3f}"
        lines.append(f"copying:   nearest training image at median "
                     f"{c['median_distance_generated']:.3f} vs {c['median_distance_real']:.3f} "
                     f"for held-out real (ratio {ratio}); near copies {100 * c['near_copies']:.1f}%"
                     f" ({100 * c['near_copies_expected']:g}% by chance)")
    return "\n".join(lines)


def real_data(sources, class_set, holdout: float | None = None, split_seed: int = 0) -> Dataset:
    """Real images from ``sources``, or only the hash holdout of them that a training run given
    ``--holdout`` left out (so models trained with and without them compare on unseen images)."""
    from kepkreator.data import load_sources
    if holdout is None:
        return load_sources(list(sources), class_set)
    from kepkreator.training.common import split_data
    held_out = split_data(list(sources), class_set.name, holdout, [], split_seed)[1]
    if not len(held_out):
        raise KepKreatorError(f"a holdout of {holdout:g} keeps none of the "
                              f"{', '.join(sources)} images")
    return held_out


def generator_training_set(generator, sources, per_class=None, subset_seed=None, note=print):
    """(the images the generator learnt from, the hash holdout or None): the sources split,
    subset and capped as its card's hyperparameters say `train gan` did it; ``per_class`` and
    ``subset_seed`` override the card's."""
    from types import SimpleNamespace

    from kepkreator.training.common import training_data
    training = generator.card.get("training") or {}
    recorded = {"holdout": 0.0, "split_seed": 0, "per_class": 0, "subset_seed": 0,
                "max_train_samples": 0, "seed": 0, **(training.get("hparams") or {})}
    if per_class is not None:
        recorded["per_class"] = per_class
    if subset_seed is not None:
        recorded["subset_seed"] = subset_seed
    train, held_out, _ = training_data(SimpleNamespace(**{
        **recorded, "data": list(sources), "eval_data": [],
        "class_set": generator.class_set.name}))
    expected = (training.get("data") or {}).get("train_samples")
    if expected not in (None, len(train)):
        note(f"note: {len(train):,} training images from --train-data, the generator's card "
             f"records {expected:,}")
    return train, held_out
