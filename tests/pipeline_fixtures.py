"""Tiny, seeded generator/validator bundles, spec helpers, class folders and a small real MNIST
for the tests."""
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from kepkreator.models.writing import write_bundle


def make_tiny_bundles(root: Path, class_set: str = "digits", num_classes: int = 10,
                      chars: str = "0123456789") -> tuple[Path, Path]:
    import keras

    from kepkreator.models.networks import build_generator, build_validator
    keras.utils.set_random_seed(7)
    gen = write_bundle(root / f"{class_set}-generator", build_generator(num_classes, "tiny"), {
        "kind": "generator", "class_set": class_set, "labels": list(chars),
        "signature": {"inputs": ["z", "label"], "latent_dim": 16, "label_encoding": "int",
                      "label_shape": [1], "label_dtype": "int32", "output_range": "tanh",
                      "orientation": "upright"}})
    val = write_bundle(root / f"{class_set}-validator", build_validator(num_classes, "tiny"), {
        "kind": "validator", "class_set": class_set, "labels": list(chars),
        "signature": {"input_range": "tanh", "orientation": "upright", "output": "probabilities",
                      "features_layer": "features"}})
    return gen, val


def write_spec(path: Path, **fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(fields))
    else:
        path.write_text(yaml.safe_dump(fields))
    return path


def tiny_spec(path, tiny, **fields):
    """A spec for the tiny bundles: small, seeded, filter off; ``fields`` override."""
    gen, val = tiny
    base = {"class_set": "digits", "generator": str(gen), "validator": str(val),
            "counts": {"per_class": 7}, "seed": 3, "min_confidence": 0, "shards": 3,
            "unit_size": 16}
    return write_spec(path, **{**base, **fields})


def class_folders(root, classes, per_class):
    """``folder@root`` of distinct crosses in class folders: real PNGs the folder loader keeps
    (no duplicates), for data that leaves classes out without needing ../shared."""
    for c, char in enumerate(classes):
        (root / char).mkdir(parents=True)
        for i in range(per_class):
            image = np.zeros((28, 28), np.uint8)
            image[4:24, 12:16] = 255  # a bar, and a crossbar whose height and length vary
            image[5 + i % 18, 2:17 + c] = 255  # (classes at most 10, images at most 360)
            image[6 + i // 18, 2:10] = 255
            Image.fromarray(image).save(root / char / f"{i}.png")
    return f"folder@{root}"


def small_mnist(root, mnist_dir, train_per_class=40, test_per_class=20):
    """A real, small MNIST in the official file layout, so the study runs in seconds."""
    from kepkreator.data import load_sources, write_idx
    from kepkreator.downstream import per_class_subset
    root.mkdir(parents=True, exist_ok=True)
    for split, stem, n in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        part = per_class_subset(load_sources([f"mnist:{split}@{mnist_dir}"], "digits"), n, seed=3)
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", part.images)
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", part.labels.astype(np.uint8))
    return root
