"""Does the synthetic data help? Train one fixed reference classifier per setting, test on real.

Settings (issue: Classification Accuracy Score and honest augmentation gains):
  a      the full real training set
  b      synthetic only, the same size (the Classification Accuracy Score)
  c      a small real subset, N per class
  c_aug  that subset with classic augmentation (shifts, rotations, zoom)
  d      the subset + synthetic from a generator that saw all the real data
  d_aug  d with classic augmentation: do the two kinds of augmentation add up?
  e      the subset + synthetic from a generator trained only on the subset

The classifier is deliberately not the validator: a LeNet-style CNN with fixed epochs, batch
size and optimiser, so that only the training data differs between settings.
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

SETTINGS = {
    "a": "full real train set",
    "b": "synthetic only, same size (CAS)",
    "c": "real subset",
    "c_aug": "real subset + classic augmentation",
    "d": "real subset + synthetic (generator saw all real data)",
    "d_aug": "real subset + synthetic (generator saw all real data) + classic augmentation",
    "e": "real subset + synthetic (generator trained on the subset only)",
    "e_aug": "real subset + synthetic (subset-only generator) + classic augmentation",
    # Opt-in control: the synthetic data replaced by as many *other real* images (a perfect
    # generator), so (e)'s gap over c_aug can be read against the most any generator could add.
    "ceiling_aug": "real subset + as many other real images as d/e add + classic augmentation",
}
AUGMENTED = {"c_aug", "d_aug", "e_aug", "ceiling_aug"}


@dataclass
class ReferenceTraining:
    """Every setting gets the same number of updates, so only the training data differs."""
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3  # cosine-decayed to zero over ``steps``


def build_reference_classifier(num_classes: int):
    """A small LeNet-style CNN: cheap on CPU (about 1 min per run here), about 99% on MNIST, and
    unrelated to the validator, so the validator's own biases do not grade its filter."""
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="reference_classifier")


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


def train_and_test(train: Dataset, test: Dataset, seed: int, augment: bool = False,
                   schedule: ReferenceTraining = ReferenceTraining()) -> dict:
    """Accuracy (overall and per class) of the reference classifier trained on ``train``."""
    import keras
    import tensorflow as tf

    from kepkreator.models.bundle import predict_in_batches
    from kepkreator.training.common import to_model_input, with_classic_augmentation
    keras.utils.set_random_seed(seed)
    num_classes = train.class_set.num_classes
    data = (tf.data.Dataset.from_tensor_slices((to_model_input(train.images), train.labels))
            .shuffle(len(train), seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(schedule.batch_size))
    if augment:
        data = with_classic_augmentation(data)
    model = build_reference_classifier(num_classes)
    rate = keras.optimizers.schedules.CosineDecay(schedule.learning_rate, schedule.steps)
    model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    model.fit(data.prefetch(tf.data.AUTOTUNE), epochs=1, steps_per_epoch=schedule.steps,
              shuffle=False, verbose=0)
    predicted = predict_in_batches(model, to_model_input(test.images)).argmax(1)
    per_class = {test.class_set.chars[c]: float((predicted[test.labels == c] == c).mean())
                 for c in range(num_classes) if (test.labels == c).any()}
    return {"accuracy": float((predicted == test.labels).mean()), "per_class": per_class,
            "train_samples": len(train), "steps": schedule.steps, "seed": seed,
            "augment": augment, "test_samples": len(test)}


def concat(*parts: Dataset) -> Dataset:
    return Dataset(np.concatenate([p.images for p in parts]),
                   np.concatenate([p.labels for p in parts]), parts[0].class_set,
                   [s for p in parts for s in p.provenance])


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Mean and spread (max - min over seeds) per setting, overall and per class."""
    out = {}
    for setting, results in runs.items():
        accs = np.array([r["accuracy"] for r in results])
        classes = results[0]["per_class"]
        out[setting] = {
            "description": SETTINGS[setting], "seeds": len(results),
            "accuracy_mean": float(accs.mean()), "accuracy_spread": float(accs.max() - accs.min()),
            "accuracy_std": float(accs.std()), "train_samples": results[0]["train_samples"],
            "per_class_mean": {c: float(np.mean([r["per_class"][c] for r in results]))
                               for c in classes},
            "runs": results}
    return out


def check_targets(summary: dict) -> list[dict]:
    """The issue's two targets, computed from the runs: CAS close to real, and honest gains."""
    checks = []
    if {"a", "b"} <= summary.keys():
        gap = summary["a"]["accuracy_mean"] - summary["b"]["accuracy_mean"]
        checks.append({"target": "(b) within 0.5 pp of (a)", "value_pp": round(100 * gap, 3),
                       "met": bool(gap <= 0.005)})
    for low_data in ("e", "e_aug"):
        if {low_data, "c_aug"} <= summary.keys():
            gain = summary[low_data]["accuracy_mean"] - summary["c_aug"]["accuracy_mean"]
            spread = max(summary[low_data]["accuracy_spread"], summary["c_aug"]["accuracy_spread"])
            checks.append({"target": f"({low_data}) above (c_aug) by more than the seed spread",
                           "value_pp": round(100 * gain, 3), "spread_pp": round(100 * spread, 3),
                           "met": bool(gain > spread)})
    return checks


def card_summary(report: dict) -> dict:
    """What a model card keeps of a study: the protocol, means and spreads, the target checks."""
    cfg = report["config"]
    return {"protocol": {k: cfg.get(k) for k in ("per_class", "seeds", "synthetic_per_class",
                                                 "min_confidence", "latent_scale", "training",
                                                 "data", "eval_data", "holdout",
                                                 "subset_gan_epochs", "subset_modes_per_class",
                                                 "subset_generator_preset",
                                                 "subset_mode_seeking")},
            "test_samples": report["test_samples"],
            "latent_scales": report.get("latent_scales", {}),
            "settings": {name: {k: row[k] for k in ("description", "train_samples",
                                                     "accuracy_mean", "accuracy_spread", "seeds")}
                         for name, row in report["settings"].items()},
            "checks": report["checks"]}


def markdown_table(summary: dict, checks: list[dict] | None = None) -> str:
    lines = ["| setting | training data | samples | test accuracy, mean ± half-spread "
             "(min–max over seeds) |", "|---|---|---|---|"]
    for setting, row in summary.items():
        accs = [100 * r["accuracy"] for r in row["runs"]]
        lines.append(f"| {setting} | {row['description']} | {row['train_samples']:,} | "
                     f"{100 * row['accuracy_mean']:.2f}% ± {100 * row['accuracy_spread'] / 2:.2f} "
                     f"({min(accs):.2f}–{max(accs):.2f}, {row['seeds']} seeds) |")
    if checks:
        lines.append("")
    for check in checks or []:
        extra = f", seed spread {check['spread_pp']:.2f} pp" if "spread_pp" in check else ""
        lines.append(f"- {check['target']}: {check['value_pp']:+.2f} pp{extra} — "
                     f"{'met' if check['met'] else 'MISSED'}")
    if checks is not None and {"ceiling_aug", "c_aug"} <= summary.keys():
        headroom = summary["ceiling_aug"]["accuracy_mean"] - summary["c_aug"]["accuracy_mean"]
        lines.append(f"- for scale: real images in place of the synthetic ones (ceiling_aug) "
                     f"gain {100 * headroom:+.2f} pp over c_aug")
    return "\n".join(lines)


def per_class_markdown(summary: dict) -> str:
    settings = list(summary)
    classes = list(next(iter(summary.values()))["per_class_mean"])
    lines = ["| class | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{100 * summary[s]['per_class_mean'][c]:.1f}"
                                              for s in settings) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The whole study, from real data to the table. Generation is injected (``generate``) because it
# runs the Beam pipeline, which lives outside this package: the CLI passes pipeline.run in.

# Every synthetic set is read back and trained on in memory (float32: 3.1 KB an image).
MAX_SYNTHETIC = 1_000_000

GenerateFn = Callable[[dict, Path], Path]  # (spec dict, output dir) -> dataset dir


@dataclass
class DownstreamConfig:
    class_set: str
    data: list[str]
    out: str
    eval_data: list[str] = field(default_factory=list)
    holdout: float = 0.0
    split_seed: int = 0
    per_class: int = 200
    subset_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = tuple(SETTINGS)
    generator: str = ""  # for b and d; default: the shipped one for the class set
    validator: str = ""
    synthetic_per_class: int = 2000  # synthetic samples per class added to the subset (d, e)
    min_confidence: float | dict = 0.9  # or per class, as in a spec: {"default": 0.9, "I": 0.5}
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
    # Scan only: this hash holdout of ``data`` (split seed ``split_seed``) is another study's test
    # set — it is left out first, and the validation ``holdout`` drawn from the rest (seed + 1).
    reserve_holdout: float = 0.0


def _card_latent_scale(generator: str, class_set: str) -> float:
    """Read from the card alone: no model load for one number."""
    from kepkreator.models.bundle import card_latent_scale, read_card, resolve_bundle_path
    return card_latent_scale(read_card(resolve_bundle_path(generator or f"default:{class_set}",
                                                           "generator")))


def _pipeline_spec(cfg: DownstreamConfig, class_set: ClassSet, counts, **fields) -> dict:
    """One generation job of a study or scan; ``fields`` add or override spec keys."""
    return dict(class_set=class_set.name, min_confidence=cfg.min_confidence,
                seed=cfg.generation_seed, formats=["parquet"], shards=4,
                generator=cfg.generator or f"default:{class_set.name}",
                validator=cfg.validator or f"default:{class_set.name}",
                counts={class_set.chars[c]: int(n) for c, n in enumerate(counts)}) | fields


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
    from kepkreator.models.bundle import read_card, resolve_bundle_path, sha256_file
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
                         ("subset_mode_seeking", 0.0)):
        if protocol[key] == default:
            protocol.pop(key)
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
    shipped_scale = cfg.latent_scale or _card_latent_scale(cfg.generator, class_set.name)
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
        counts = train.class_counts() if "b" in cfg.settings else \
            np.full(class_set.num_classes, cfg.synthetic_per_class)
        counts = np.maximum(counts, cfg.synthetic_per_class if with_shipped_synthetic else 0)
        spec = _pipeline_spec(cfg, class_set, counts, latent_scale=shipped_scale)
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
        f"{cfg.training.steps} steps of batch {cfg.training.batch_size}, tested on "
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

def scan_split(cfg: DownstreamConfig) -> tuple[Dataset, Dataset, dict]:
    """(train, validation, info) for a scan: the --holdout of the data, or of what is left once
    another study's test holdout (``reserve_holdout``) is set aside."""
    from kepkreator.training.common import split_data
    if not cfg.reserve_holdout:
        return split_data(list(cfg.data), cfg.class_set, cfg.holdout, [], cfg.split_seed)
    from kepkreator.data import load_sources
    from kepkreator.data.splits import hash_split
    data = load_sources(list(cfg.data), cfg.class_set)
    rest = data.subset(~hash_split(data.images, cfg.reserve_holdout, cfg.split_seed))
    held = hash_split(rest.images, cfg.holdout, cfg.split_seed + 1)
    return rest.subset(~held), rest.subset(held), {
        "sources": list(cfg.data), "provenance": data.provenance,
        "reserved_holdout": cfg.reserve_holdout, "reserved": len(data) - len(rest),
        "holdout_fraction": cfg.holdout, "split_seed": cfg.split_seed + 1}


def scan_latent_scales(cfg: DownstreamConfig, scales: tuple[float, ...], generate: GenerateFn,
                       log=print, thresholds: tuple[float, ...] = (),
                       floor: dict | None = None) -> dict:
    """Setting b (synthetic only, the real train set's size) per latent scale, and per filter
    threshold where ``thresholds`` are given (else at ``cfg.min_confidence``), tested on the
    --holdout part of the training source; every run is cached like the study's runs.

    The choice is the highest CAS among the settings whose kept samples meet ``floor``: the
    independent judge's agreement and the density against real images (``metrics.json`` of
    each generated set), so a setting cannot win on samples a person would label otherwise.
    Where none meets it, the most faithful one (judge agreement) is chosen, and the report
    says the floor was missed."""
    from kepkreator.training.common import require_every_class, write_json
    if cfg.eval_data or not cfg.holdout:
        raise DataError("the scan chooses on validation data: give --holdout and no --eval-data, "
                        "so the test set stays unseen")
    # checked before any data is read; ``not 0 < x`` also catches NaN
    if not scales or not all(0 < s <= 10 for s in scales):
        raise DataError(f"latent scales must be numbers in (0, 10], got {list(scales)}")
    if not all(0 <= t < 1 for t in thresholds):
        raise DataError(f"thresholds must be numbers in [0, 1), got {list(thresholds)}")
    for name, values in (("latent scale", scales), ("threshold", thresholds)):
        if len(set(values)) < len(values):  # the same run twice: a duplicate row, hours wasted
            raise DataError(f"a {name} is listed twice: {list(values)}")
    class_set = get_class_set(cfg.class_set)
    out = Path(cfg.out)
    protocol = _check_same_study(cfg, out)
    train, validation, data_info = scan_split(cfg)
    # Setting b draws as many samples of a class as it has real images: none is no spec at all.
    require_every_class(train)
    _record_study(out, protocol)
    counts = train.class_counts()
    grid = [(scale, threshold) for scale in scales
            for threshold in (thresholds or (cfg.min_confidence,))]
    rows = []
    for scale, threshold in grid:
        # A threshold of the grid is in every cached name; a lone --min-confidence is not, so
        # scans from before the grid resume.
        name = f"scale{scale:g}" + (f"-conf{threshold:g}" if thresholds else "")
        spec = _pipeline_spec(cfg, class_set, counts, latent_scale=scale, min_confidence=threshold)
        where = out / f"synthetic-{name}"
        synthetic = first_per_class(_generated(generate, spec, where, class_set.name, log), counts)
        generated = json.loads((where / "metrics.json").read_text())
        accs = []
        for seed in cfg.seeds:
            cached = out / "runs" / f"{name}-seed{seed}.json"
            if cached.is_file():
                result = json.loads(cached.read_text())
            else:
                result = train_and_test(synthetic, validation, seed, schedule=cfg.training)
                write_json(cached, result)
            log(f"latent scale {scale:g}, min_confidence {confidence_text(threshold)}, seed "
                f"{seed}: validation accuracy {100 * result['accuracy']:.2f}%")
            accs.append(result["accuracy"])
        rows.append({"latent_scale": scale, "min_confidence": threshold,
                     "cas_mean": float(np.mean(accs)),
                     "cas_spread": float(np.max(accs) - np.min(accs)), "seeds": len(accs),
                     "acceptance_rate": generated["accepted"] / max(generated["generated"], 1),
                     "judge_agreement": (generated.get("judge") or {}).get("agreement_accepted"),
                     "density": (generated.get("fidelity") or {}).get("density"),
                     "coverage": (generated.get("fidelity") or {}).get("coverage")})
    floor = dict(floor or {})
    meets = lambda r: all(r.get(key) is not None and r[key] >= value
                          for key, value in floor.items() if value)
    eligible = [r for r in rows if meets(r)]
    best = (max(eligible, key=lambda r: r["cas_mean"]) if eligible
            else max(rows, key=lambda r: (r["judge_agreement"] or 0, r["cas_mean"])))
    report = {"config": asdict(cfg), "data": data_info, "validation_samples": len(validation),
              "scales": rows, "best_latent_scale": best["latent_scale"],
              "best_min_confidence": best["min_confidence"], "fidelity_floor": floor,
              "floor_met": bool(eligible)}
    write_json(out / "sampling.json", report)
    percent = lambda x, d=2: "-" if x is None else f"{100 * x:.{d}f}%"
    number = lambda x: "-" if x is None else f"{x:.3f}"
    lines = ["| latent scale | min_confidence | acceptance rate | judge agrees | density | "
             "coverage | CAS on validation, mean ± half-spread |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['latent_scale']:g}{' (chosen)' if r is best else ''} | "
              f"{confidence_text(r['min_confidence'])} | "
              f"{percent(r['acceptance_rate'], 1)} | {percent(r['judge_agreement'])} | "
              f"{number(r['density'])} | {number(r['coverage'])} | "
              f"{100 * r['cas_mean']:.2f}% ± "
              f"{100 * r['cas_spread'] / 2:.2f} ({r['seeds']} seed{'s' * (r['seeds'] > 1)}) |"
              for r in rows]
    floor_text = ", ".join(f"{key} ≥ {value:g}" for key, value in floor.items() if value)
    if floor_text:
        lines += ["", f"Fidelity floor: {floor_text}: "
                  + ("the chosen setting has the highest CAS of those that meet it." if eligible
                     else "no setting meets it; the chosen one is the most faithful.")]
    (out / "sampling.md").write_text(
        f"# Sampling scan: {class_set.name}\n\nSynthetic-only reference classifier "
        f"({len(synthetic):,} samples, {cfg.training.steps} steps), tested on "
        f"{len(validation):,} held-out real validation images.\n\n" + "\n".join(lines) + "\n")
    return report


def confidence_text(value) -> str:
    """A threshold as the pipeline's card prints it: ``0.9``, or ``0.9 (I: 0.5)``."""
    if not isinstance(value, dict):
        return f"{value:g}"
    extra = ", ".join(f"{k}: {v:g}" for k, v in value.items() if k != "default")
    return f"{value.get('default', 0.9):g} ({extra})"


def sampling_card_entry(report: dict) -> dict:
    cfg = report["config"]
    floor = report.get("fidelity_floor") or {}
    return {"latent_scale": report["best_latent_scale"],
            "min_confidence": report.get("best_min_confidence", cfg["min_confidence"]),
            "chosen_by": "highest CAS (synthetic-only reference classifier) on held-out real "
                         "validation data" + (", among the settings whose kept samples meet the "
                                              "fidelity floor" if floor else "")
                         + "; `kepkreator tune-sampling`",
            "fidelity_floor": floor, "floor_met": report.get("floor_met", True),
            "validation": {k: cfg[k] for k in ("data", "holdout", "split_seed", "reserve_holdout")
                           if k in cfg},
            "validation_samples": report["validation_samples"], "scan": report["scales"]}
