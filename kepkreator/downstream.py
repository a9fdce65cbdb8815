"""Does the synthetic data help? Train one fixed reference classifier per setting, test on real.

Settings (issue: Classification Accuracy Score and honest augmentation gains):
  a      the full real training set
  b      synthetic only, the same size (the Classification Accuracy Score)
  c      a small real subset, N per class
  c_aug  that subset with classic augmentation (shifts, rotations, zoom)
  d      the subset + synthetic from a generator that saw all the real data
  d_aug  d with classic augmentation: do the two kinds of augmentation add up?
  e      the subset + synthetic from a generator trained only on the subset

The classifier is deliberately not the validator: a fixed CNN (``kepkreator.cas``) with fixed
updates, batch size and optimiser, so that only the training data differs between settings.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.data import Dataset
from kepkreator.errors import DataError
from kepkreator.cas import ReferenceTraining, train_and_test
from kepkreator.study_report import (AUGMENTED, SETTINGS, check_targets, markdown_table,
                                     per_class_markdown, summarise)
from kepkreator.training.common import DataChoice


def per_class_subset(data: Dataset, per_class: int, seed: int) -> Dataset:
    """``per_class`` samples of every class, the same ones the trainers' ``--per-class`` pick."""
    from kepkreator.data import per_class_subset as pick
    return data.subset(pick(data.labels, data.class_set.num_classes, per_class, seed))


def other_real(train: Dataset, cfg: "DownstreamConfig") -> Dataset:
    """``synthetic_per_class`` real images of every class from outside the study's subset."""
    from kepkreator.data import per_class_subset as pick
    num_classes = train.class_set.num_classes
    rest = train.subset(np.setdiff1d(np.arange(len(train)),
                                     pick(train.labels, num_classes, cfg.per_class,
                                          cfg.subset_seed)))
    try:
        return rest.subset(pick(rest.labels, num_classes, cfg.synthetic_per_class,
                                cfg.subset_seed + 1))
    except DataError as err:
        raise DataError(f"setting ceiling_aug needs {cfg.synthetic_per_class} real images per "
                        f"class beyond the subset: {err}") from None


def first_per_class(data: Dataset, per_class: int | np.ndarray) -> Dataset:
    """The first ``per_class`` (one number, or one per class) samples of each class; generated
    data is already in random order."""
    wanted = np.broadcast_to(per_class, (data.class_set.num_classes,))
    picks = [np.flatnonzero(data.labels == c)[:wanted[c]]
             for c in range(data.class_set.num_classes)]
    return data.subset(np.sort(np.concatenate(picks)))


def read_dataset(path: str | Path, class_set: ClassSet | str) -> Dataset:
    """A dataset written by ``kepkreator generate``, read back from its shards as a user would."""
    from kepkreator.data import load_generated
    class_set = get_class_set(class_set)
    images, labels, written_as = load_generated(path)
    if written_as.name != class_set.name:
        raise DataError(f"{path} holds class set {written_as.name!r}, not class set "
                        f"{class_set.name!r}")
    return Dataset(images, labels, class_set, [{"source": str(path)}])


def concat(*parts: Dataset) -> Dataset:
    return Dataset(np.concatenate([p.images for p in parts]),
                   np.concatenate([p.labels for p in parts]), parts[0].class_set,
                   [s for p in parts for s in p.provenance])


# ----------------------------------------------------------------------------------------------
# The whole study, from real data to the table. Generation is injected (``generate``) because it
# runs the Beam pipeline, which lives outside this package: the CLI passes pipeline.run in.

# Every synthetic set is read back and trained on in memory (float32: 3.1 KB an image).
MAX_SYNTHETIC = 1_000_000

GenerateFn = Callable[[dict, Path], Path]  # (spec dict, output dir) -> dataset dir


@dataclass
class DownstreamConfig(DataChoice):
    split_seed: int = 0
    per_class: int = 200
    subset_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = tuple(SETTINGS)
    generator: str = ""  # for b and d; default: the shipped one for the class set
    validator: str = ""
    synthetic_per_class: int = 2000  # synthetic samples per class added to the subset (d, e)
    # or per class, as in a spec: {"default": 0.9, "I": 0.5}; None: the generator card's
    min_confidence: float | dict | None = None
    training: ReferenceTraining = field(default_factory=ReferenceTraining)
    subset_validator_epochs: int = 40
    subset_validator_preset: str = "default"
    subset_gan_epochs: int = 120
    subset_gan_batch_size: int = 64
    subset_generator_preset: str = "default"
    subset_discriminator_preset: str = "default"
    subset_aux_weight: float = 1.0  # lower: less pull towards prototypes, more diverse samples
    subset_modes_per_class: int = 1  # class splitting for the subset GAN (training/modes.py)
    subset_mode_seeking: float = 0.0  # mode-seeking weight of the subset GAN (train gan)
    generation_seed: int = 0
    # z ~ N(0, latent_scale^2) for every generated set; None: each generator at its card's choice
    # (``kepkreator tune-sampling``; the subset-only generator has none, so 1): a scale chosen on
    # the full data's validation split must not steer the low-data chain.
    latent_scale: float | None = None
    # The realism filter's strength for the shipped generator's sets (b, d); None: as the
    # pipeline resolves a spec that does not name it (the card's, with the card's threshold).
    realism: float | None = None
    # Scan only: this hash holdout of ``data`` (split seed ``split_seed``) is another study's test
    # set — it is left out first, and the validation ``holdout`` drawn from the rest (seed + 1).
    reserve_holdout: float = 0.0


def _card_latent_scale(generator: str, class_set: str, min_confidence=None,
                       realism: float | None = None) -> float:
    """The scale a spec with this threshold and realism filter gets from the generator's card,
    read from the card alone: no model load for one number."""
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.models.card import card_latent_scale, read_card
    card = read_card(resolve_bundle_path(generator or f"default:{class_set}", "generator"))
    named = min_confidence if isinstance(min_confidence, (int, float)) else None
    return card_latent_scale(card, named, realism)


def _pipeline_spec(cfg: DownstreamConfig, class_set: ClassSet, counts, **fields) -> dict:
    """One generation job of a study or scan; ``fields`` add or override spec keys. A threshold
    left to the card is left out of the spec."""
    spec = dict(class_set=class_set.name, seed=cfg.generation_seed, formats=["parquet"],
                shards=4, generator=cfg.generator or f"default:{class_set.name}",
                validator=cfg.validator or f"default:{class_set.name}",
                counts={class_set.chars[c]: int(n) for c, n in enumerate(counts)})
    if cfg.min_confidence is not None:
        spec["min_confidence"] = cfg.min_confidence
    return spec | fields


def _generated(generate: GenerateFn, spec: dict, out: Path, class_set: str, log) -> Dataset:
    """Run (or reuse a finished run of) the pipeline and read its Parquet back like a user would."""
    if not (out / "manifest.json").is_file():  # a manifest is written last: the run finished
        log(f"generating {sum(spec['counts'].values()):,} samples into {out}")
        generate(spec, out)
    else:
        log(f"reusing the finished dataset in {out}")
    return read_dataset(out, class_set)


def _subset_models(cfg: DownstreamConfig, out: Path, log) -> tuple[Path, Path]:
    """Validator and generator trained on the real subset alone (setting e's honest chain)."""
    from kepkreator.training.gan import GANHParams, train_gan
    from kepkreator.training.validator import ValidatorHParams, train_validator
    common = dict(class_set=cfg.class_set, data=list(cfg.data), eval_data=list(cfg.eval_data),
                  holdout=cfg.holdout, split_seed=cfg.split_seed, per_class=cfg.per_class,
                  subset_seed=cfg.subset_seed, seed=cfg.generation_seed, verbose=2)
    validator, generator = out / "validator", out / "generator"
    if not (validator / "card.json").is_file():
        log(f"training the subset validator into {validator}")
        train_validator(ValidatorHParams(**common, out=str(validator),
                                         epochs=cfg.subset_validator_epochs,
                                         preset=cfg.subset_validator_preset))
    if not (generator / "card.json").is_file():
        log(f"training the subset generator into {generator}")
        train_gan(GANHParams(**common, out=str(generator), epochs=cfg.subset_gan_epochs,
                             batch_size=cfg.subset_gan_batch_size, diff_augment=True,
                             generator_preset=cfg.subset_generator_preset,
                             discriminator_preset=cfg.subset_discriminator_preset,
                             aux_weight=cfg.subset_aux_weight,
                             modes_per_class=cfg.subset_modes_per_class,
                             mode_seeking=cfg.subset_mode_seeking,
                             validator=str(validator), eval_per_class=200))
    return generator, validator


def _model_fingerprints(cfg: DownstreamConfig) -> dict:
    """The weights behind the b/d bundle references: "default:digits" names whatever is shipped
    today, so a resumed study compares weight hashes, not names (cards change, weights must not)."""
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.models.card import read_card, sha256_file
    fingerprints = {}
    for kind, ref in (("generator", cfg.generator), ("validator", cfg.validator)):
        path = resolve_bundle_path(ref or f"default:{cfg.class_set}", kind)
        card = read_card(path)
        if card["kind"] != kind or card["class_set"] != cfg.class_set:  # before --out is touched
            raise DataError(f"{path} is a {card['class_set']} {card['kind']} bundle, the study "
                            f"needs a {cfg.class_set} {kind}")
        fingerprints[kind] = sha256_file(path / card["model_file"])
    return fingerprints


def _check_same_study(cfg: DownstreamConfig, out: Path, resolved: dict | None = None) -> dict:
    """Resuming reuses finished runs and datasets, so they must come from the same protocol, the
    same b/d weights and the same resolved defaults; only settings and seeds may grow. Returns
    the protocol, for ``_record_study`` once the data has loaded: a typo in a data path must not
    leave a record that refuses the corrected command."""
    protocol = json.loads(json.dumps({k: v for k, v in asdict(cfg).items()
                                      if k not in ("settings", "seeds", "out")}))
    # Options newer than the recorded studies are left out at their defaults, so those resume.
    for key, default in (("reserve_holdout", 0.0), ("subset_modes_per_class", 1),
                         ("subset_mode_seeking", 0.0), ("realism", None)):
        if protocol[key] == default:
            protocol.pop(key)
    if protocol["training"]["classifier"] == "lenet":
        protocol["training"].pop("classifier")
    protocol["model_sha256"] = _model_fingerprints(cfg)
    protocol.update(resolved or {})
    recorded = out / "study.json"
    # a study writes runs, datasets and reports into --out: never into someone else's folder
    if out.exists() and (not out.is_dir() or (not recorded.is_file() and any(out.iterdir()))):
        raise DataError(f"--out {out} is not empty and holds no earlier study to resume; "
                        "give a new or empty directory")
    if recorded.is_file():
        before = json.loads(recorded.read_text())
        changed = sorted(k for k in protocol.keys() | before.keys()
                         if protocol.get(k) != before.get(k))
        if changed:
            raise DataError(f"{out} holds a study with other {', '.join(changed)}; "
                            "use a new --out (finished runs are reused only for the same protocol)")
    return protocol


def _record_study(out: Path, protocol: dict) -> None:
    if not (out / "study.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "study.json").write_text(json.dumps(protocol, indent=2) + "\n")


def run_study(cfg: DownstreamConfig, generate: GenerateFn, log=print) -> dict:
    """Every setting x seed; finished runs are kept in OUT/runs/ so an interrupted study resumes."""
    from kepkreator.training.common import split_data, write_json
    unknown = set(cfg.settings) - set(SETTINGS)
    if unknown:
        raise DataError(f"unknown setting(s) {', '.join(n or repr(n) for n in sorted(unknown))} "
                        f"(known: {', '.join(SETTINGS)})")
    if {"e", "e_aug"} & set(cfg.settings):  # not only after the study recorded itself
        from kepkreator.models.networks import check_presets
        check_presets(cfg.subset_validator_preset, cfg.subset_generator_preset,
                      cfg.subset_discriminator_preset)
    class_set = get_class_set(cfg.class_set)
    total = cfg.synthetic_per_class * class_set.num_classes
    if total > MAX_SYNTHETIC and set(cfg.settings) & {"d", "d_aug", "e", "e_aug"}:
        raise DataError(f"--synthetic-per-class {cfg.synthetic_per_class} x "
                        f"{class_set.num_classes} classes is {total:,} images, more than the "
                        f"{MAX_SYNTHETIC:,} a study holds in memory")
    subset_size = cfg.per_class * class_set.num_classes
    if {"e", "e_aug"} & set(cfg.settings) and subset_size < cfg.subset_gan_batch_size:
        raise DataError(f"--per-class {cfg.per_class} gives at most {subset_size:,} subset "
                        f"images, fewer than --subset-gan-batch-size {cfg.subset_gan_batch_size}"
                        ": the subset GAN would have no full batch")
    out = Path(cfg.out)
    shipped_scale = cfg.latent_scale or _card_latent_scale(cfg.generator, class_set.name,
                                                           cfg.min_confidence, cfg.realism)
    protocol = _check_same_study(cfg, out, {"b_d_latent_scale": shipped_scale})
    train, test, data_info = split_data(list(cfg.data), class_set.name, cfg.holdout,
                                        list(cfg.eval_data), cfg.split_seed)
    if test is None:
        raise DataError("the study needs real test data: give --eval-data or --holdout")
    subset = per_class_subset(train, cfg.per_class, cfg.subset_seed)
    _record_study(out, protocol)  # after the checks: a refused study leaves no folder behind
    # An explicit --latent-scale applies to every set; otherwise the pipeline asks each card.
    explicit = {"latent_scale": cfg.latent_scale} if cfg.latent_scale else {}
    latent_scales = {}
    synthetic = {}
    with_shipped_synthetic = {"d", "d_aug"} & set(cfg.settings)
    if "b" in cfg.settings or with_shipped_synthetic:
        # One set for b and d whatever the settings: the pipeline lays out its work by the
        # counts, so a set drawn for b alone would hold other samples than one drawn for b and d
        # (letters with fewer real images than --synthetic-per-class), and b's figure would
        # depend on which other settings ran.
        counts = np.maximum(train.class_counts(), cfg.synthetic_per_class)
        spec = _pipeline_spec(cfg, class_set, counts, latent_scale=shipped_scale,
                              **({"realism": cfg.realism} if cfg.realism is not None else {}))
        synthetic["shipped"] = _generated(generate, spec, out / "synthetic-shipped", class_set.name,
                                          log)
        latent_scales["b_d"] = shipped_scale
    if {"e", "e_aug"} & set(cfg.settings):
        generator, validator = _subset_models(cfg, out / "subset-models", log)
        spec = _pipeline_spec(cfg, class_set,
                              np.full(class_set.num_classes, cfg.synthetic_per_class),
                              generator=str(generator.resolve()),
                              validator=str(validator.resolve()), **explicit)
        synthetic["subset"] = _generated(generate, spec, out / "synthetic-subset", class_set.name,
                                         log)
        manifest = json.loads((out / "synthetic-subset" / "manifest.json").read_text())
        if "latent_scale" not in manifest["spec"]:
            raise DataError(f"{out / 'synthetic-subset'} comes from a pipeline version that did "
                            "not record its latent scale; delete it or use a new --out")
        latent_scales["e"] = manifest["spec"]["latent_scale"]  # what the pipeline resolved

    def training_set(setting: str) -> Dataset:
        if setting == "a":
            return train
        if setting == "b":  # the same size and class mix as the real train set
            return first_per_class(synthetic["shipped"], train.class_counts())
        if setting in ("c", "c_aug"):
            return subset
        if setting == "ceiling_aug":
            return concat(subset, other_real(train, cfg))
        source = synthetic["shipped" if setting in ("d", "d_aug") else "subset"]
        return concat(subset, first_per_class(source, cfg.synthetic_per_class))

    runs: dict[str, list[dict]] = {}
    for setting in cfg.settings:
        data = training_set(setting)
        for seed in cfg.seeds:
            cached = out / "runs" / f"{setting}-seed{seed}.json"
            if cached.is_file():
                result = json.loads(cached.read_text())
            else:
                log(f"setting {setting}, seed {seed}: {len(data):,} training samples")
                result = train_and_test(data, test, seed, augment=setting in AUGMENTED,
                                        schedule=cfg.training)
                write_json(cached, result)
            log(f"setting {setting}, seed {seed}: accuracy {100 * result['accuracy']:.2f}%")
            runs.setdefault(setting, []).append(result)
    summary = summarise(runs)
    checks = check_targets(summary)
    report = {"config": asdict(cfg), "data": data_info, "test_samples": len(test),
              "subset_samples": len(subset), "latent_scales": latent_scales,
              "settings": summary, "checks": checks}
    write_json(out / "downstream.json", report)
    (out / "downstream.md").write_text(
        f"# Downstream study: {class_set.name}\n\nReference classifier: "
        f"{cfg.training.classifier}, {cfg.training.steps} steps of batch {cfg.training.batch_size}, tested on "
        f"{len(test):,} real images; subset {cfg.per_class} per class; latent scale "
        + (", ".join(f"{k} {v:g}" for k, v in latent_scales.items()) or "-") + ".\n\n"
        + markdown_table(summary, checks) + "\n\n## Per class (mean accuracy %)\n\n"
        + per_class_markdown(summary) + "\n")
    return report


# ----------------------------------------------------------------------------------------------
# Choosing the latent scale. The filter rejects what the validator doubts, so the generator can be
# sampled wider than its training prior (the opposite of truncation): more varied accepted data,
# at the price of more rejected candidates. Chosen by CAS on held-out *validation* data carved
# from the training source, never on the test set the study reports.


