"""Does the synthetic data help? Train one fixed reference classifier per setting, test on real.

Settings (issue: Classification Accuracy Score and honest augmentation gains):
  a      the full real training set
  b      synthetic only, the same size (the Classification Accuracy Score)
  c      a small real subset, N per class
  c_aug  that subset with classic augmentation (shifts, rotations, zoom)
  d      the subset + synthetic from a generator that saw all the real data
  e      the subset + synthetic from a generator trained only on the subset

The classifier is deliberately not the validator: a LeNet-style CNN with fixed epochs, batch
size and optimiser, so that only the training data differs between settings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
    "e": "real subset + synthetic (generator trained on the subset only)",
}


@dataclass
class ReferenceTraining:
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    min_steps: int = 1500  # small sets get more epochs, so every setting sees as many updates


def build_reference_classifier(num_classes: int):
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 5, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 5, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="reference_classifier")


def per_class_subset(data: Dataset, per_class: int, seed: int) -> Dataset:
    """``per_class`` samples of every class, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(data.class_set.num_classes):
        members = np.flatnonzero(data.labels == c)
        if len(members) < per_class:
            raise DataError(f"class {data.class_set.chars[c]!r} has {len(members)} samples, "
                            f"fewer than the {per_class} asked for")
        picks.append(rng.choice(members, per_class, replace=False))
    return data.subset(np.sort(np.concatenate(picks)))


def read_dataset(path: str | Path, class_set: ClassSet | str) -> Dataset:
    """A dataset written by ``kepkreator generate``, read back from its Parquet shards."""
    import pyarrow.parquet as pq

    from kepkreator.imageio import decode_png
    class_set = get_class_set(class_set)
    files = sorted(Path(path).glob("data/*.parquet"))
    if not files:
        raise DataError(f"{path} has no Parquet shards (data/*.parquet)")
    table = pq.read_table(files)
    features = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}") or b"{}")
    names = features.get("info", {}).get("features", {}).get("label", {}).get("names")
    if names is not None and names != list(class_set.chars):
        raise DataError(f"{path} holds labels {''.join(names)}, not class set {class_set.name!r}")
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    images = np.stack([decode_png(b) for b in pngs])
    return Dataset(images, table.column("label").to_numpy().astype(np.int64), class_set,
                   [{"source": str(path)}])


def train_and_test(train: Dataset, test: Dataset, seed: int, augment: bool = False,
                   schedule: ReferenceTraining = ReferenceTraining()) -> dict:
    """Accuracy (overall and per class) of the reference classifier trained on ``train``."""
    import keras
    import tensorflow as tf

    from kepkreator.training.common import classic_augmentation, to_model_input
    keras.utils.set_random_seed(seed)
    num_classes = train.class_set.num_classes
    steps_per_epoch = int(np.ceil(len(train) / schedule.batch_size))
    epochs = max(schedule.epochs, int(np.ceil(schedule.min_steps / steps_per_epoch)))
    data = (tf.data.Dataset.from_tensor_slices((to_model_input(train.images), train.labels))
            .shuffle(len(train), seed=seed).batch(schedule.batch_size))
    if augment:
        augmenter = classic_augmentation()
        data = data.map(lambda x, y: (augmenter(x, training=True), y),
                        num_parallel_calls=tf.data.AUTOTUNE)
    model = build_reference_classifier(num_classes)
    model.compile(keras.optimizers.Adam(schedule.learning_rate),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.prefetch(tf.data.AUTOTUNE), epochs=epochs, verbose=0)
    predicted = model.predict(to_model_input(test.images), batch_size=2048, verbose=0).argmax(1)
    per_class = {test.class_set.chars[c]: float((predicted[test.labels == c] == c).mean())
                 for c in range(num_classes) if (test.labels == c).any()}
    return {"accuracy": float((predicted == test.labels).mean()), "per_class": per_class,
            "train_samples": len(train), "epochs": epochs}


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


def markdown_table(summary: dict) -> str:
    lines = ["| setting | training data | samples | accuracy (mean ± spread over seeds) |",
             "|---|---|---|---|"]
    for setting, row in summary.items():
        lines.append(f"| {setting} | {row['description']} | {row['train_samples']:,} | "
                     f"{100 * row['accuracy_mean']:.2f}% ± {100 * row['accuracy_spread'] / 2:.2f} |")
    return "\n".join(lines)
