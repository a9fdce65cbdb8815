"""Hyperparameter search for conditional GANs with Keras Tuner, scored by the project's metrics.

A GAN's losses say little about its samples, so each trial is judged the way the pipeline judges
data: the trial's (EMA) generator is sampled class by class and the validator measures label
agreement, BCIS, WCIS and the Frechet distance to real data in the validator's feature space.
Keras Tuner's oracles (RandomSearch, Hyperband) propose the hyperparameters; ``GANTuner.run_trial``
trains and scores. Agreement and BCIS are maximised, WCIS and the Frechet distance minimised.
"""
from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kepkreator.classsets import get_class_set
from kepkreator.errors import KepKreatorError

OBJECTIVES = {"agreement": "max", "bcis": "max", "wcis": "min", "frechet": "min"}
ALGORITHMS = ("random", "hyperband")


@dataclass
class TuneConfig:
    class_set: str
    data: list[str]
    out: str
    validator: str = ""  # default: the shipped validator of the class set
    eval_data: list[str] = field(default_factory=list)
    holdout: float = 0.0
    objective: str = "agreement"
    algorithm: str = "random"
    trials: int = 8
    epochs: int = 2  # per trial (random); the largest budget of a trial (hyperband)
    hyperband_factor: int = 3
    max_train_samples: int = 0
    per_class: int = 0
    eval_per_class: int = 200
    seed: int = 0
    generator_preset: str = "default"
    discriminator_preset: str = "default"
    search_space: str = "default"  # "tiny" for tests: the same knobs, small values
    verbose: int | str = 0


SEARCH_SPACES = {
    # The seed project's knobs (latent size, label embedding, width, batch norm, learning rates,
    # batch size), with ranges that fit a CPU.
    "default": dict(latent_dim=[32, 64, 100, 128], embed_dim=[10, 16, 32, 50],
                    channels=[64, 96, 128], batch_size=[64, 128, 256]),
    "tiny": dict(latent_dim=[8, 16], embed_dim=[4, 8], channels=[8, 16], batch_size=[16, 32]),
}


def define_search_space(hp, space: str) -> dict:
    """Hyperparameters of one trial, as GANHParams overrides."""
    values = SEARCH_SPACES[space]
    return dict(
        latent_dim=hp.Choice("latent_dim", values["latent_dim"]),
        embed_dim=hp.Choice("embed_dim", values["embed_dim"]),
        channels=hp.Choice("channels", values["channels"]),
        batch_norm=hp.Boolean("batch_norm", default=True),
        g_learning_rate=hp.Float("g_learning_rate", 5e-5, 1e-3, sampling="log"),
        d_learning_rate=hp.Float("d_learning_rate", 5e-5, 1e-3, sampling="log"),
        batch_size=hp.Choice("batch_size", values["batch_size"]),
    )


def trial_metrics(report: dict) -> dict:
    """The four objectives (plus IS) from an ``evaluate_generator`` report."""
    generated = report["generated"]
    metrics = {"agreement": generated["agreement"], "bcis": generated["bcis"],
               "wcis": generated["wcis"], "is": generated["is"]}
    if "frechet_distance" in report:
        metrics["frechet"] = report["frechet_distance"]
    # Keras Tuner cannot rank NaN; a degenerate generator scores worst instead.
    return {k: (float(v) if np.isfinite(v) else (-1e9 if OBJECTIVES.get(k) == "max" else 1e9))
            for k, v in metrics.items()}


def _make_tuner_class():
    import keras_tuner

    class GANTuner(keras_tuner.engine.base_tuner.BaseTuner):
        """Each trial: build the GAN from the trial's values, train, write a bundle, score it."""

        def __init__(self, cfg: TuneConfig, train, evaluation, validator, data_info, **kwargs):
            super().__init__(**kwargs)
            self.cfg, self.train, self.evaluation = cfg, train, evaluation
            self.validator, self.data_info = validator, data_info

        def run_trial(self, trial, *args, **kwargs):
            import keras

            from kepkreator.evaluate import evaluate_generator, record_in_card
            from kepkreator.models.writing import write_bundle
            from kepkreator.training.common import reseed_each_epoch
            from kepkreator.training.gan import (GANHParams, build_gan, gan_dataset,
                                                 gan_steps_per_epoch, generator_card)
            values = trial.hyperparameters
            cfg = self.cfg
            trial_dir = Path(self.get_trial_dir(trial.trial_id))
            # Hyperband hands a budget (tuner/epochs) and, for a promoted trial, its parent.
            epochs = values.values.get("tuner/epochs", cfg.epochs)
            initial_epoch = values.values.get("tuner/initial_epoch", 0)
            hp = GANHParams(class_set=cfg.class_set, data=list(cfg.data), out=str(
                trial_dir / "generator"), eval_data=list(cfg.eval_data), holdout=cfg.holdout,
                generator_preset=cfg.generator_preset, per_class=cfg.per_class,
                discriminator_preset=cfg.discriminator_preset, seed=cfg.seed, epochs=epochs,
                max_train_samples=cfg.max_train_samples, verbose=cfg.verbose,
                **define_search_space(values, cfg.search_space))
            keras.utils.set_random_seed(cfg.seed)
            gan = build_gan(hp, (self.train.images, self.train.labels))
            parent = values.values.get("tuner/trial_id")
            if parent:
                gan.load_weights(str(Path(self.get_trial_dir(parent)) / "gan.weights.h5"))
            else:
                initial_epoch = 0
            started = time.time()
            gan.fit(gan_dataset(self.train, hp, first_epoch=initial_epoch), epochs=epochs,
                    initial_epoch=initial_epoch, shuffle=False, verbose=cfg.verbose,
                    steps_per_epoch=gan_steps_per_epoch(self.train, hp),
                    callbacks=[reseed_each_epoch()])
            gan.save_weights(str(trial_dir / "gan.weights.h5"))
            card = generator_card(hp, gan, self.data_info)
            card["training"]["tuning"] = {"trial_id": trial.trial_id, "parent_trial": parent,
                                          "initial_epoch": initial_epoch,
                                          "seconds": round(time.time() - started, 1)}
            path = write_bundle(hp.out, gan.ema_generator, card)
            report = evaluate_generator(path, self.validator, per_class=cfg.eval_per_class,
                                        seed=cfg.seed, real=self.evaluation)
            record_in_card(path, report)
            return trial_metrics(report)

    return GANTuner


def tune(cfg: TuneConfig, log=print) -> dict:
    """Run (or resume) the search; write results.csv/.md and the best trial's bundle."""
    import keras_tuner

    from kepkreator.models.bundle import load_validator_for
    from kepkreator.training.common import (check_resume, require_every_class, training_data,
                                            write_json)
    if cfg.objective not in OBJECTIVES:
        raise KepKreatorError(f"unknown objective {cfg.objective!r} "
                              f"(known: {', '.join(OBJECTIVES)})")
    if cfg.algorithm not in ALGORITHMS:
        raise KepKreatorError(f"unknown algorithm {cfg.algorithm!r} "
                              f"(known: {', '.join(ALGORITHMS)})")
    if cfg.search_space not in SEARCH_SPACES:
        raise KepKreatorError(f"unknown search space {cfg.search_space!r}")
    from kepkreator.models.networks import check_presets
    check_presets(generator=cfg.generator_preset, discriminator=cfg.discriminator_preset)
    out = Path(cfg.out)
    # the search resumes from out/search and replaces out/best: never in someone else's folder
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "search").is_dir())):
        raise KepKreatorError(f"--out {out} is not empty and holds no earlier search to resume; "
                              "give a new or empty directory")
    class_set = get_class_set(cfg.class_set)
    validator = load_validator_for(cfg.validator or f"default:{class_set.name}", class_set)
    train, evaluation, data_info = training_data(cfg)
    require_every_class(train)
    if cfg.objective == "frechet" and evaluation is None:
        raise KepKreatorError("objective frechet needs real data: give --eval-data or --holdout")
    largest_batch = max(SEARCH_SPACES[cfg.search_space]["batch_size"])
    if len(train) < largest_batch:  # else trials fail one by one, each with Keras Tuner's trace
        raise KepKreatorError(f"{len(train):,} training images are fewer than the search space's "
                              f"largest batch size, {largest_batch}")
    # Keras Tuner reloads its trials whatever the new settings: another objective would rank
    # the old trials' agreement as Frechet distances. Only --trials may grow.
    (out / "search").mkdir(parents=True, exist_ok=True)
    check_resume(cfg, out / "search", free={"trials", "out", "verbose"}, what="search")

    objective = keras_tuner.Objective(cfg.objective, direction=OBJECTIVES[cfg.objective])
    space = keras_tuner.HyperParameters()  # declared up front, so every trial is drawn from it
    define_search_space(space, cfg.search_space)
    common = dict(objective=objective, hyperparameters=space, allow_new_entries=False,
                  seed=cfg.seed)
    if cfg.algorithm == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=cfg.trials, **common)
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=cfg.epochs, factor=cfg.hyperband_factor, hyperband_iterations=1, **common)
        oracle.max_trials = cfg.trials  # Hyperband plans its own brackets; --trials caps them
    tuner = _make_tuner_class()(cfg, train, evaluation, validator, data_info, oracle=oracle,
                                directory=str(out), project_name="search")
    # Keras Tuner's progress table is print()ed; stdout is reserved for the results table.
    with contextlib.redirect_stdout(sys.stderr):
        tuner.search()
    rows = results_table(tuner, cfg)
    if not rows or all(r["status"] != "COMPLETED" for r in rows):
        raise KepKreatorError(f"no trial completed; see {out / 'search'}")
    write_results(rows, cfg, out)
    best = next(r for r in rows if r["status"] == "COMPLETED")
    best_dir = out / "best"
    if best_dir.exists():
        if not (best_dir / "card.json").is_file():
            raise KepKreatorError(f"{best_dir} is not a bundle from an earlier search; "
                                  "not replacing it")
        shutil.rmtree(best_dir)
    shutil.copytree(Path(tuner.get_trial_dir(best["trial_id"])) / "generator", best_dir)
    card_path = best_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["name"] = "best"
    card["training"]["tuning"].update(objective=cfg.objective, direction=OBJECTIVES[cfg.objective],
                                      algorithm=cfg.algorithm, trials=len(rows),
                                      config=asdict(cfg))
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    summary = {"best": best, "best_bundle": str(best_dir), "trials": rows,
               "objective": cfg.objective, "direction": OBJECTIVES[cfg.objective]}
    write_json(out / "results.json", summary)
    log(f"best trial {best['trial_id']}: {cfg.objective} {best[cfg.objective]:.4f}")
    return summary


PARAMS = ("latent_dim", "embed_dim", "channels", "batch_norm", "g_learning_rate",
          "d_learning_rate", "batch_size")
METRICS = ("agreement", "bcis", "wcis", "frechet", "is")


def results_table(tuner, cfg: TuneConfig) -> list[dict]:
    """Every trial (failed ones too, so nothing disappears), best first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        row = {"trial_id": trial.trial_id, "status": trial.status,
               "epochs": values.get("tuner/epochs", cfg.epochs),
               "continues": values.get("tuner/trial_id")}  # Hyperband: the trial it resumed
        row.update({k: values.get(k) for k in PARAMS})
        for name in METRICS:
            row[name] = (trial.metrics.get_last_value(name)
                         if trial.metrics.exists(name) else None)
        rows.append(row)
    sign = 1 if OBJECTIVES[cfg.objective] == "max" else -1
    done = [r for r in rows if r["status"] == "COMPLETED" and r[cfg.objective] is not None]
    done.sort(key=lambda r: -sign * r[cfg.objective])
    return done + [r for r in rows if r not in done]


def write_results(rows: list[dict], cfg: TuneConfig, out: Path) -> None:
    columns = ["trial_id", "status", "epochs", "continues", *PARAMS, *METRICS]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value):
        if isinstance(value, float):
            return f"{value:.2e}" if abs(value) < 1e-2 else f"{value:.4g}"
        return "" if value is None else str(value)
    arrow = "↑" if OBJECTIVES[cfg.objective] == "max" else "↓"
    lines = [f"Objective: {cfg.objective} {arrow} ({cfg.algorithm}, {len(rows)} trials)", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
