"""The fixed reference classifier of the studies: trained the same way on any training set and
tested on real data, it measures what a set is worth (on synthetic data alone: the
Classification Accuracy Score)."""
from __future__ import annotations

from dataclasses import dataclass

from kepkreator.data import Dataset


@dataclass
class ReferenceTraining:
    """Every setting gets the same number of updates, so only the training data differs."""
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3  # cosine-decayed to zero over ``steps``
    classifier: str = "lenet"  # one of REFERENCE_CLASSIFIERS


REFERENCE_CLASSIFIERS = ("lenet", "convnet4")


def build_reference_classifier(num_classes: int, classifier: str = "lenet"):
    """``lenet``: a small LeNet-style CNN, cheap on CPU (about 1 min per run here), about 99% on
    MNIST. ``convnet4``: four 3x3 convolutions, about 99.5% on MNIST in six epochs without
    augmentation; a stronger classifier shows gaps between training sets that the small one
    compresses. Both are unrelated to the validator, so its biases do not grade its filter."""
    import keras
    from keras import layers
    conv = lambda width: layers.Conv2D(width, 3, padding="same", activation="relu")
    if classifier == "lenet":
        body = [conv(32), layers.MaxPooling2D(), conv(64), layers.MaxPooling2D(),
                layers.Flatten(), layers.Dense(256, activation="relu"), layers.Dropout(0.5)]
    elif classifier == "convnet4":
        body = [conv(32), conv(32), layers.MaxPooling2D(), conv(64), conv(64),
                layers.MaxPooling2D(), layers.Flatten(), layers.Dense(256, activation="relu"),
                layers.Dropout(0.5)]
    else:
        raise ValueError(f"unknown reference classifier {classifier!r} "
                         f"(known: {', '.join(REFERENCE_CLASSIFIERS)})")
    return keras.Sequential([keras.Input((28, 28, 1)), *body,
                             layers.Dense(num_classes, activation="softmax")],
                            name="reference_classifier")


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
    model = build_reference_classifier(num_classes, schedule.classifier)
    rate = keras.optimizers.schedules.CosineDecay(schedule.learning_rate, schedule.steps)
    model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    model.fit(data.prefetch(tf.data.AUTOTUNE), epochs=1, steps_per_epoch=schedule.steps,
              shuffle=False, verbose=0)
    predicted = predict_in_batches(model, to_model_input(test.images)).argmax(1)
    per_class = {test.class_set.chars[c]: float((predicted[test.labels == c] == c).mean())
                 for c in range(num_classes) if (test.labels == c).any()}
    return {"accuracy": float((predicted == test.labels).mean()), "per_class": per_class,
            "train_samples": len(train), "steps": schedule.steps, "seed": seed,
            "augment": augment, "test_samples": len(test), "classifier": schedule.classifier}
