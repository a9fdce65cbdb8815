"""Tiny, seeded generator/validator bundles and spec helpers for pipeline tests."""
import json
from pathlib import Path

import yaml

from kepkreator.models.bundle import write_bundle


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
