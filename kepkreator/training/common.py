"""Pieces shared by both trainers: data splits, sample grids, callbacks, provenance."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
import shlex
import sys
from pathlib import Path

import numpy as np
from kepkreator.data import Dataset, hash_split, load_sources, per_class_subset
from kepkreator.errors import DataError
from kepkreator.imageio import grid_png


@dataclass
class DataChoice:
    """Which real data a run reads and where its result goes: the fields every trainer and
    study shares (``split_data`` reads them)."""
    class_set: str
    data: list[str]
    out: str
    eval_data: list[str] = field(default_factory=list)
    holdout: float = 0.0


def split_data(sources: list[str], class_set: str, holdout: float, eval_sources: list[str],
               split_seed: int, per_class: int = 0, subset_seed: int = 0,
               ) -> tuple[Dataset, Dataset | None, dict]:
    """Train and evaluation sets: an explicit eval source, or a hash holdout of the training data.

    Images that occur in the eval set are removed from training, so no test image is ever seen.
    ``per_class`` keeps only that many training samples of each class (low-data training).
    """
    data = load_sources(sources, class_set)
    info = {"sources": sources, "provenance": data.provenance}
    if eval_sources:
        evaluation = load_sources(eval_sources, class_set)
        from kepkreator.data.splits import image_hashes
        overlap = np.isin(image_hashes(data.images), image_hashes(evaluation.images))
        if overlap.all():  # else the first complaint is a class "with 0 samples"
            raise DataError(f"every image of {', '.join(sources)} is also in "
                            f"{', '.join(eval_sources)}: nothing is left to train on")
        data = data.subset(~overlap)
        info.update(eval_sources=eval_sources, removed_from_train_as_in_eval=int(overlap.sum()))
    elif holdout > 0:
        test = hash_split(data.images, holdout, split_seed)
        evaluation, data = data.subset(test), data.subset(~test)
        # Whoever reports on the evaluation set must be able to say it is a holdout, not the
        # sources themselves.
        evaluation = Dataset(evaluation.images, evaluation.labels, evaluation.class_set,
                             [{**p, "holdout_fraction": holdout, "split_seed": split_seed}
                              for p in evaluation.provenance])
        info.update(holdout_fraction=holdout, split_seed=split_seed)
    else:
        evaluation = None
    if per_class:
        data = data.subset(per_class_subset(data.labels, data.class_set.num_classes, per_class,
                                            subset_seed))
        info.update(per_class=per_class, subset_seed=subset_seed)
    info.update(train_samples=len(data), eval_samples=len(evaluation) if evaluation else 0,
                train_class_counts=data.class_counts().tolist())
    return data, evaluation, info


def training_data(hp) -> tuple[Dataset, Dataset | None, dict]:
    """``split_data`` for any hparams with the usual data fields, then ``max_train_samples``."""
    train, evaluation, info = split_data(
        list(hp.data), hp.class_set, hp.holdout, list(hp.eval_data),
        getattr(hp, "split_seed", 0), hp.per_class, getattr(hp, "subset_seed", 0))
    if hp.max_train_samples:
        train = train.subset(np.random.default_rng(hp.seed).permutation(len(train))[
            :hp.max_train_samples])
    return train, evaluation, info


def require_every_class(train: Dataset, min_images: int = 1, reason: str = "",
                        remedy: str = "give data for every class, or a class set that fits "
                                      "the data") -> None:
    """Refuse a training set that leaves a class out (or, with ``min_images``, leaves it thin).

    A model trained without a class still answers for it: a generator draws noise under its
    label, a validator never predicts it; either would ship looking complete.
    """
    counts = train.class_counts()
    short = [c for c, n in enumerate(counts) if n < min_images]
    if not short:
        return
    chars = train.class_set.chars
    listed = ", ".join(chars[c] if min_images == 1 else f"{chars[c]} ({counts[c]})"
                       for c in short[:12]) + (f" and {len(short) - 12} more"
                                               if len(short) > 12 else "")
    need = "no training images" if min_images == 1 else f"fewer than {min_images} training images"
    verb = "has" if len(short) == 1 else "have"
    raise DataError(f"{len(short)} of the {len(chars)} classes of {train.class_set.name!r} "
                    f"{verb} {need}{reason}: {listed}; {remedy}")


def save_grid(path: Path, images: np.ndarray, rows: int, scale: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(grid_png(images, rows, scale))
    return path


def environment() -> dict:
    import keras
    import tensorflow as tf

    from kepkreator import __version__
    return {"kepkreator": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "backend": keras.backend.backend()}


def classic_augmentation():
    """Random rotation (about 11 degrees), zoom and shift: the augmentation GAN data must beat."""
    import keras
    fill = dict(fill_value=-1.0, fill_mode="constant")  # model inputs are in [-1, 1]: black
    return keras.Sequential([keras.layers.RandomRotation(0.03, **fill),
                             keras.layers.RandomZoom(0.1, **fill),
                             keras.layers.RandomTranslation(0.1, 0.1, **fill)],
                            name="classic_augmentation")


def with_classic_augmentation(batches):
    """``batches`` of (image, label) with every image batch randomly shifted, rotated, zoomed.

    Mapped one batch at a time: the augmentation layers draw from one random state, and parallel
    calls would take the draws in whatever order the threads run, so a seed would not fix the run.
    """
    augmenter = classic_augmentation()
    return batches.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=None)


def completed_epochs(workdir: Path) -> int:
    """Epochs a workdir's checkpoint holds (BackupAndRestore's own record; 0 for none)."""
    metadata = Path(workdir) / "backup" / "training_metadata.json"
    try:
        return int(json.loads(metadata.read_text())["epoch"]) if metadata.is_file() else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # unreadable: Keras decides for itself, and says so if it cannot restore


def epoch_batches(images, labels, batch_size: int, seed: int, first_epoch: int, epochs: int,
                  drop_remainder: bool = False, augment: bool = False):
    """Batches for epochs ``first_epoch`` .. ``epochs - 1``; fit with ``steps_per_epoch``.

    Each epoch's order, and with ``augment`` each batch's classic augmentation, is drawn from
    (seed, epoch, batch) alone, so a run resumed after epoch k sees the data an uninterrupted
    run sees, where a seeded shuffle and augmentation layers would replay epoch 1's draws.
    """
    import tensorflow as tf
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    count = int(labels.shape[0])

    def epoch_order(epoch):  # a stateless draw: the same for an epoch in any run
        keys = tf.random.stateless_uniform([count], seed=tf.stack([tf.constant(seed, tf.int64),
                                                                   epoch]))
        batches = tf.data.Dataset.from_tensor_slices(tf.argsort(keys)).batch(
            batch_size, drop_remainder=drop_remainder)
        return batches.enumerate().map(lambda number, index: (epoch, number, index))

    data = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_order)
    if not augment:
        return data.map(lambda epoch, number, index: (tf.gather(images, index),
                                                      tf.gather(labels, index)))
    augmenter = classic_augmentation()
    states = [v for v in augmenter.variables if v.path.endswith("seed_generator_state")]

    def augmented(epoch, number, index):
        for layer, state in enumerate(states):  # each layer's stream, at this batch's own point
            state.assign(tf.cast(tf.stack([seed * 16 + layer, epoch * 2**20 + number]),
                                 state.dtype))
        return augmenter(tf.gather(images, index), training=True), tf.gather(labels, index)

    return data.map(augmented, num_parallel_calls=None)  # in order: the states are shared


def reseed_each_epoch():
    """A Keras callback: every random stream of the model (the GAN's noise, dropout) restarts at
    a point fixed by the epoch. Their states are not in the checkpoint, so without it a resumed
    run would draw epoch 1's noise again."""
    import keras

    class ReseedEachEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for state in self.model.variables:
                if state.path.endswith("seed_generator_state"):
                    seed = int(keras.ops.convert_to_numpy(state.value)[0])
                    state.assign(np.array([seed, (epoch << 20) % 2**32], state.dtype))

    return ReseedEachEpoch()


def keras_verbosity(verbose) -> int:
    """Keras fit verbosity: a live progress bar on a terminal, one line per epoch otherwise."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def announce_start(hp, workdir: Path, images: int) -> None:
    """In a log, Keras prints nothing until the first epoch ends (minutes on a CPU): say what
    trains, where the checkpoints go, and whether this run picks up an earlier one."""
    if keras_verbosity(hp.verbose) == 0:
        return
    done = completed_epochs(workdir)
    where = f"checkpoints and TensorBoard logs in {workdir}"
    if done >= hp.epochs:
        line = f"all {hp.epochs} epochs are already trained ({where}); writing the bundle"
    elif done:
        line = (f"resuming after epoch {done} of {hp.epochs} on {images:,} images; {where}")
    else:
        line = (f"training {hp.epochs} epoch{'s' * (hp.epochs > 1)} on {images:,} images; "
                f"{where} (the same command resumes)")
    print(line, file=sys.stderr, flush=True)


# What a resumed run may change: how long it trains, where the bundle goes, how it is measured
# and logged. Everything else is in the checkpoint (architecture, optimizer state with its
# learning rate, data order) or decides what the checkpoint means.
RESUMABLE_CHANGES = {"epochs", "out", "workdir", "validator", "eval_per_class", "verbose",
                     "command", "jit_compile"}


def check_bundle_out(out) -> None:
    """Training writes its bundle into --out and replaces an earlier bundle there; a folder of
    other files (the working directory, a dataset) is refused before any training."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.models.card import CARD_NAME, MODEL_FILE
    out = Path(out)
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    # A model file without its card is a save that was cut short: the re-run replaces it.
    if names - {CARD_NAME, MODEL_FILE} and CARD_NAME not in names:
        raise KepKreatorError(f"--out {out} holds files but no model bundle (no {CARD_NAME}); "
                              "give a new or empty folder, or an earlier bundle to replace")


def check_resume(hp, workdir: Path, free=RESUMABLE_CHANGES, what: str = "run") -> None:
    """A workdir restores weights and optimizer state, so resuming it under other settings
    either fails to load (another width) or trains on with the old ones while the card records
    the new (another learning rate). The first run records its settings; later ones must match
    but for the ``free`` ones."""
    from dataclasses import MISSING, asdict, fields

    from kepkreator.errors import KepKreatorError
    record = workdir / f"{what}.json"
    settings = json.loads(json.dumps({k: v for k, v in asdict(hp).items() if k not in free}))
    if not record.is_file():
        write_json(record, settings)
        return
    before = json.loads(record.read_text())
    # A setting added to the package after the record was written trained at its default then.
    defaults = json.loads(json.dumps({f.name: f.default for f in fields(hp)
                                      if f.default is not MISSING}))
    before = {**{k: v for k, v in defaults.items() if k in settings}, **before}
    changed = sorted(k for k in settings.keys() | before.keys()
                     if settings.get(k) != before.get(k))
    if changed:
        listing = ", ".join(f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed[:4])
        raise KepKreatorError(f"{workdir} holds a {what} with other settings ({listing}); resume "
                              f"it with the same ones, or give another "
                              f"{'--workdir' if what == 'run' else '--out'}")


def stop_on_divergence(workdir: Path):
    """A Keras callback, to go first in the list: a loss that is no longer finite ends training
    with an error before the epoch's checkpoint is written, so no bundle of NaN weights is saved
    and a re-run resumes from the last finite epoch. Checked once per epoch (the epoch mean is
    NaN if any step was), which keeps the training loop free of per-step host syncs."""
    import keras

    from kepkreator.errors import KepKreatorError

    class StopOnDivergence(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            bad = sorted(name for name, value in (logs or {}).items()
                         if not np.isfinite(float(value)))
            if bad:
                raise KepKreatorError(
                    f"training diverged: {', '.join(bad)} not finite in epoch {epoch + 1}; no "
                    f"bundle written ({workdir} holds the last finite epoch and a re-run resumes "
                    "from it; to retry with lower learning rates, remove it first)")

    return StopOnDivergence()


def command_line(command: str | None) -> str:
    return command or " ".join(shlex.quote(a) for a in ["kepkreator", *sys.argv[1:]])


def to_model_input(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) * (2.0 / 255.0) - 1.0)[..., None]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
