"""train_validator(hparams): the CNN that scores, filters and labels generated samples."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kepkreator.classsets import get_class_set
from kepkreator.training.common import (DataChoice, announce_start, check_bundle_out, check_resume,
                                        command_line, completed_epochs, environment,
                                        epoch_batches, keras_verbosity, require_every_class,
                                        reseed_each_epoch, stop_on_divergence, to_model_input,
                                        training_data, write_json)


@dataclass
class ValidatorHParams(DataChoice):
    preset: str = "default"
    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 2e-3
    augment: bool = True
    seed: int = 0
    split_seed: int = 0
    per_class: int = 0  # train on only this many real samples of each class (0 = all)
    subset_seed: int = 0
    max_train_samples: int = 0  # 0 = all; tests use a few hundred
    workdir: str = ""  # checkpoints + TensorBoard; default <out>.work
    verbose: int | str = "auto"  # live bar on a terminal, one line per epoch in logs
    command: str = ""


def train_validator(hp: ValidatorHParams, callbacks=()) -> Path:
    """Train, measure on held-out real data, and write a validator bundle to ``hp.out``.

    ``callbacks`` are extra Keras callbacks (timers, early stopping) added to the built-in ones.
    """
    import keras
    import tensorflow as tf

    from kepkreator.models.writing import write_bundle
    from kepkreator.models.networks import build_validator, check_presets

    keras.utils.set_random_seed(hp.seed)
    class_set = get_class_set(hp.class_set)
    check_presets(validator=hp.preset)
    check_bundle_out(hp.out)
    train, evaluation, data_info = training_data(hp)
    require_every_class(train)
    workdir = Path(hp.workdir or f"{hp.out}.work")
    workdir.mkdir(parents=True, exist_ok=True)
    check_resume(hp, workdir)
    announce_start(hp, workdir, len(train))

    dataset = epoch_batches(to_model_input(train.images), train.labels, hp.batch_size, hp.seed,
                            completed_epochs(workdir), hp.epochs,
                            augment=hp.augment).prefetch(tf.data.AUTOTUNE)
    validation = None
    if evaluation is not None:
        validation = (to_model_input(evaluation.images), evaluation.labels)

    model = build_validator(class_set.num_classes, hp.preset)
    steps_per_epoch = int(np.ceil(len(train) / hp.batch_size))
    steps = hp.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(hp.learning_rate, max(steps, 1))
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    # A resumed run adds its time to that of the runs before it (their metrics.json).
    earlier = (json.loads((workdir / "metrics.json").read_text()).get("train_seconds", 0.0)
               if completed_epochs(workdir) and (workdir / "metrics.json").is_file() else 0.0)
    started = time.time() - earlier
    model.fit(dataset, epochs=hp.epochs, steps_per_epoch=steps_per_epoch,
              validation_data=validation, shuffle=False, verbose=keras_verbosity(hp.verbose),
              callbacks=[stop_on_divergence(workdir),
                         keras.callbacks.BackupAndRestore(str(workdir / "backup"),
                                                          delete_checkpoint=False),
                         reseed_each_epoch(),
                         keras.callbacks.TensorBoard(str(workdir / "tensorboard")),
                         *callbacks])
    seconds = time.time() - started

    metrics = {"train_seconds": round(seconds, 1)}
    if evaluation is not None:
        probs = model.predict(validation[0], batch_size=2048, verbose=0)
        predicted = probs.argmax(1)
        per_class = [float((predicted[evaluation.labels == c] == c).mean())
                     if (evaluation.labels == c).any() else None
                     for c in range(class_set.num_classes)]
        metrics.update(eval_accuracy=float((predicted == evaluation.labels).mean()),
                       eval_samples=len(evaluation), eval_per_class_accuracy=per_class)
    card = {
        "kind": "validator", "name": Path(hp.out).name, "class_set": class_set.name,
        "labels": list(class_set.chars),
        "signature": {"input_range": "tanh", "orientation": "upright",
                      "output": "probabilities", "features_layer": "features"},
        "training": {"hparams": asdict(hp) | {"command": command_line(hp.command)},
                     "data": data_info, "epochs": hp.epochs, "seed": hp.seed,
                     "parameters": int(model.count_params()), "environment": environment()},
        "metrics": metrics,
    }
    path = write_bundle(hp.out, model, card)
    write_json(workdir / "metrics.json", metrics)
    return path
