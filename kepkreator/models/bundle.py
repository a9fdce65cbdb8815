"""A model bundle is a directory: a Keras file plus ``card.json`` that says how to drive it.

Every consumer (training, evaluation, the pipeline, rendering) loads models through
``load_bundle``, so a foreign model only needs an honest card to work everywhere. The card's
``signature`` describes the model's own conventions (label encoding and offset, pixel range,
orientation); ``Generator``/``Validator`` translate to the package's one convention at the edge:
uint8 images, white ink on black, upright, labels as class-set indices.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import BundleError, KepKreatorError
from kepkreator.models.card import (CARD_NAME, MODEL_SUFFIXES, card_latent_scale, read_card,
                                    sha256_file, verify_model_file)
from kepkreator.paths import not_local

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def to_model_range(images_uint8: np.ndarray, pixel_range: str) -> np.ndarray:
    x = images_uint8.astype(np.float32)
    if pixel_range == "tanh":
        return x * (2.0 / 255.0) - 1.0
    if pixel_range == "sigmoid":
        return x * (1.0 / 255.0)
    return x


def from_model_range(images: np.ndarray, pixel_range: str) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if pixel_range == "tanh":
        x = (x + 1.0) * 127.5
    elif pixel_range == "sigmoid":
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _keras_custom_objects():
    import keras

    from kepkreator.models.networks import CUSTOM_OBJECTS

    class Conv2DTransposeCompat(keras.layers.Conv2DTranspose):
        """Keras 2.13/2.14 wrote ``groups`` into Conv2DTranspose configs; Keras 3 rejects it."""

        def __init__(self, *args, groups=1, **kwargs):
            super().__init__(*args, **kwargs)

    return {**CUSTOM_OBJECTS, "Conv2DTranspose": Conv2DTransposeCompat}


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _check_model_format(path: Path) -> None:
    """Name what is wrong with a model file before Keras does: for a corrupt file Keras says
    'file not found', and for an unknown suffix it prints a paragraph."""
    import zipfile
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise BundleError(f"cannot load model {path}: unsupported format '{suffix or path.name}'"
                          f" (expected {', '.join(MODEL_SUFFIXES)})")
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise BundleError(f"cannot load model {path}: not a .keras file (not a zip archive)")
    if suffix != ".keras":
        with open(path, "rb") as fh:
            if fh.read(len(_HDF5_MAGIC)) != _HDF5_MAGIC:
                raise BundleError(f"cannot load model {path}: not an HDF5 file")


def load_keras_model(path: Path):
    import keras
    _check_model_format(path)
    try:
        return keras.models.load_model(path, compile=False, custom_objects=_keras_custom_objects())
    except Exception as exc:  # Keras raises many types for unreadable files; all are user errors
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"cannot load model {path}: {first_line[:300]}") from None


# A judge is a validator in another role: a second classifier that measures and never filters;
# a second validator is one that filters beside the first.
ROLE_KINDS = {"generator": "generator", "validator": "validator", "judge": "validator",
              "second_validator": "validator"}


def resolve_bundle_path(ref: str | os.PathLike, kind: str | None = None) -> Path:
    """A bundle directory, or ``default:<set>`` for the package's shipped ``<set>/<kind>``
    (``kind``: a role, generator, validator, judge or second_validator)."""
    ref = str(ref)
    if ref.startswith("default:"):
        name = ref.split(":", 1)[1]
        candidates = [ASSETS / name] + ([ASSETS / name / kind] if kind else [])
        for path in candidates:
            if (path / CARD_NAME).is_file():
                return path
        known = sorted(p.parent.relative_to(ASSETS).as_posix()
                       for p in ASSETS.glob(f"*/*/{CARD_NAME}"))
        raise BundleError(f"no shipped bundle {ref!r}" + (f" of kind {kind}" if kind else "")
                          + f" (shipped: {', '.join(known) or 'none'})")
    if not_local(ref):
        raise BundleError(f"bundle {not_local(ref)}")
    path = Path(ref)
    if not path.exists():
        resolved = path.resolve()
        raise BundleError(f"bundle not found: {path}"
                          + (f" (resolved to {resolved})" if str(resolved) != str(path) else ""))
    if not (path / CARD_NAME).is_file():
        raise BundleError(f"not a model bundle (no {CARD_NAME}): {path}")
    return path


def _forward(model, pack, *inputs):
    return model(pack(inputs), training=False)


def _compiled_call(model):
    """model(*inputs) without Keras' per-call overhead, compiled once per model: on TensorFlow one
    tf.function whose signature leaves the batch size free, so no batch size ever triggers a
    retrace; on JAX a jitted stateless call on the weights as they are, which threads may share
    (Keras' own predict step donates its state buffers, and two threads then trip on a buffer
    the other gave away)."""
    import keras
    pack = lambda x: x[0] if len(x) == 1 else list(x)
    dtypes = [t.dtype for t in model.inputs]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        weights = ([v.value for v in model.trainable_variables],
                   [v.value for v in model.non_trainable_variables])

        @jax.jit
        def stateless(trainable, non_trainable, *inputs):
            return model.stateless_call(trainable, non_trainable, pack(inputs), training=False)[0]
        return lambda *x: stateless(*weights, *[np.asarray(a, dtype=d) for a, d in zip(x, dtypes)])
    if backend != "tensorflow":
        return lambda *x: model.predict_on_batch(pack(x))
    import tensorflow as tf
    # A partial per model, not one lambda for all: TensorFlow counts traces per code object, and
    # five bundles' first traces through one lambda read to it as a retracing loop (a warning).
    compiled = tf.function(functools.partial(_forward, model, pack),
                           input_signature=[tf.TensorSpec((None, *t.shape[1:]), t.dtype)
                                            for t in model.inputs])
    return lambda *x: compiled(*[np.asarray(a, dtype=d) for a, d in zip(x, dtypes)])


def predict_in_batches(model, inputs: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """``model.predict`` for studies that train many models in one process: Keras traces a new
    predict step per model and per last-batch shape, and TensorFlow, counting traces per code
    object, warns of a retracing loop that is not there. One free-batch compiled call per model
    traces once."""
    forward = _compiled_call(model)
    return np.concatenate([np.asarray(forward(inputs[i:i + batch_size]))
                           for i in range(0, len(inputs), batch_size)])


@dataclass
class Bundle:
    path: Path
    card: dict
    model: object  # keras.Model
    class_set: ClassSet
    _compiled: object = field(default=None, repr=False, compare=False)
    _compiled_features: object = field(default=None, repr=False, compare=False)
    _compiled_scores: object = field(default=None, repr=False, compare=False)
    _bank: object = field(default=None, repr=False, compare=False)

    def predict(self, inputs):
        """The model's forward pass, compiled once and reused for any batch size."""
        if self._compiled is None:
            self._compiled = _compiled_call(self.model)
        return np.asarray(self._compiled(*(inputs if isinstance(inputs, (list, tuple))
                                           else [inputs])))

    @property
    def reference(self) -> str:
        """What to write in a card or report: ``default:NAME`` for a shipped bundle, so shipped
        cards name no machine's paths; otherwise the path as given."""
        try:
            inside = self.path.resolve().relative_to(ASSETS.resolve())
        except ValueError:
            return str(self.path)
        return "default:" + (inside.parent if len(inside.parts) == 2 else inside).as_posix()

    @property
    def signature(self) -> dict:
        return self.card["signature"]

    @property
    def card_sha256(self) -> str:
        return sha256_file(self.path / CARD_NAME)

    def _orient(self, images: np.ndarray) -> np.ndarray:
        """Model orientation <-> upright: transposition is its own inverse."""
        if self.signature.get("orientation", "upright") == "emnist":
            return np.ascontiguousarray(np.swapaxes(images, 1, 2))
        return images


class Generator(Bundle):
    @property
    def latent_dim(self) -> int:
        return int(self.signature["latent_dim"])

    @property
    def default_latent_scale(self) -> float:
        return card_latent_scale(self.card)

    def sample_latent(self, rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
        z = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        return z if scale == 1.0 else z * np.float32(scale)

    def model_inputs(self, z: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
        sig = self.signature
        labels = self.class_set.check_indices(np.asarray(labels, np.int64))
        model_labels = labels + int(sig.get("label_offset", 0))
        if sig.get("label_encoding", "int") == "onehot":
            encoded = np.eye(int(sig.get("label_classes", self.class_set.num_classes)),
                             dtype=np.float32)[model_labels]
        else:
            encoded = model_labels.reshape(-1, *sig.get("label_shape", [1])).astype(
                sig.get("label_dtype", "int32"))
        inputs = {"z": z.astype(np.float32), "label": encoded}
        return [inputs[name] for name in sig.get("inputs", ["z", "label"])]

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        images = np.asarray(raw).reshape(len(raw), 28, 28)
        return self._orient(from_model_range(images, self.signature["output_range"]))

    def generate(self, z: np.ndarray, labels: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """(n, 28, 28) uint8 upright images of the requested classes, ``batch_size`` at a time
        so that a large draw does not hold every activation at once."""
        return np.concatenate([
            self.postprocess(self.predict(self.model_inputs(z[i:i + batch_size],
                                                            labels[i:i + batch_size])))
            for i in range(0, max(len(z), 1), batch_size)])


class Validator(Bundle):
    def preprocess(self, images_uint8: np.ndarray) -> np.ndarray:
        x = self._orient(np.asarray(images_uint8).reshape(-1, 28, 28))
        return to_model_range(x, self.signature["input_range"])[..., None]

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if self.signature.get("output", "probabilities") == "logits":
            raw = np.exp(raw - raw.max(1, keepdims=True))
            raw /= raw.sum(1, keepdims=True)
        return raw

    def probabilities(self, images_uint8: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        out = [self.postprocess(self.predict(self.preprocess(images_uint8[i:i + batch_size])))
               for i in range(0, len(images_uint8), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.class_set.num_classes), np.float32)

    def _feature_layer(self):
        name = self.signature.get("features_layer")
        layer = (self.model.get_layer(name) if name
                 else self.model.layers[-2] if len(self.model.layers) > 1 else None)
        if layer is None:
            raise BundleError(f"{self.path}: cannot find a feature layer")
        return layer

    def feature_model(self, with_outputs: bool = False):
        """The model cut at its penultimate layer, for Frechet distances and reference banks;
        ``with_outputs``: (features, outputs) from one pass."""
        import keras
        inputs = self.model.inputs
        features = self._feature_layer().output
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                           [features, self.model.outputs[0]] if with_outputs else features)

    def scores(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, features) of every image from one forward pass."""
        if self._compiled_scores is None:
            self._compiled_scores = _compiled_call(self.feature_model(with_outputs=True))
        if not len(images_uint8):
            return np.zeros((0, self.class_set.num_classes), np.float32), np.zeros((0, 0))
        features, raw = self._compiled_scores(self.preprocess(images_uint8))
        return (self.postprocess(np.asarray(raw)),
                np.asarray(features).reshape(len(images_uint8), -1))

    def reference_bank(self):
        """The real images' features the card's ``reference`` names (kepkreator.manifold), its
        file checked against the card's sha256 like the model; None without one."""
        if self._bank is None and "reference" in self.card:
            from kepkreator.manifold import ReferenceBank
            info = self.card["reference"]
            data = (self.path / info["file"]).read_bytes() if (
                self.path / info["file"]).is_file() else None
            if data is None:
                raise BundleError(f"bundle {self.path} lacks its reference bank {info['file']}")
            import hashlib
            if hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise BundleError(f"bundle {self.path}: {info['file']} is not the reference bank "
                                  "its card describes (sha256 differs)")
            self._bank = ReferenceBank.from_bytes(data, f"bundle {self.path}")
        return self._bank

    def features(self, images_uint8: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        # Compiled once per bundle with a free batch size, like predict: a new model per call,
        # run batch by batch, retraced on every short last batch (and TensorFlow warned).
        if self._compiled_features is None:
            self._compiled_features = _compiled_call(self.feature_model())
        forward = self._compiled_features
        out = [np.asarray(forward(self.preprocess(images_uint8[i:i + batch_size])))
               for i in range(0, len(images_uint8), batch_size)]
        return np.concatenate(out).reshape(len(images_uint8), -1)


def _check_signature(card: dict, model, class_set: ClassSet, path: Path) -> None:
    """The card's signature against the model's real shapes (types and ranges are check_card's)."""
    sig = card["signature"]
    where = f"bundle {path}"
    shapes = [tuple(t.shape) for t in model.inputs]
    out_shape = tuple(model.outputs[0].shape)
    if card["kind"] == "generator":
        if len(shapes) != 2:
            raise BundleError(f"{where}: a generator needs 2 inputs (z, label), model has "
                              f"{len(shapes)}")
        order = sig.get("inputs", ["z", "label"])
        z_shape, label_shape = shapes[order.index("z")], shapes[order.index("label")]
        if z_shape[-1] != int(sig["latent_dim"]):
            raise BundleError(f"{where}: card says latent_dim {sig['latent_dim']}, model's z "
                              f"input is {z_shape}")
        if sig.get("label_encoding", "int") == "onehot":
            classes = int(sig.get("label_classes", class_set.num_classes))
            if label_shape[-1] != classes:
                raise BundleError(f"{where}: one-hot label input is {label_shape}, card wants "
                                  f"{classes} classes")
        embeddings = [l for l in model.layers if type(l).__name__ == "Embedding"]
        needed = class_set.num_classes + int(sig.get("label_offset", 0))
        if embeddings and embeddings[0].input_dim < needed:
            raise BundleError(f"{where}: class set {class_set.name!r} needs {needed} labels, the "
                              f"model's label embedding takes {embeddings[0].input_dim}")
        if int(np.prod([d for d in out_shape[1:]])) != 784:
            raise BundleError(f"{where}: generator output {out_shape} is not 28x28")
    else:
        if len(shapes) != 1 or int(np.prod(shapes[0][1:])) != 784:
            raise BundleError(f"{where}: a validator takes one 28x28 image input, model has "
                              f"{shapes}")
        if out_shape[-1] != class_set.num_classes:
            raise BundleError(f"{where}: model has {out_shape[-1]} outputs, class set "
                              f"{class_set.name!r} has {class_set.num_classes}")


def load_bundle(ref: str | os.PathLike, kind: str | None = None) -> Generator | Validator:
    path = resolve_bundle_path(ref, kind)
    card = read_card(path)
    if kind and card["kind"] != ROLE_KINDS[kind]:
        raise BundleError(f"{path} is a {card['kind']} bundle, a {ROLE_KINDS[kind]} is needed "
                          "here")
    try:
        class_set = get_class_set(card["class_set"])
    except KepKreatorError as exc:
        raise BundleError(f"{path / CARD_NAME}: {exc}") from None
    if "labels" in card and list(card["labels"]) != list(class_set.chars):
        raise BundleError(f"{path / CARD_NAME}: labels do not match class set {class_set.name!r}")
    model = load_keras_model(verify_model_file(path, card))
    _check_signature(card, model, class_set, path)
    cls = Generator if card["kind"] == "generator" else Validator
    return cls(path=path, card=card, model=model, class_set=class_set)


def require_class_set(bundle: Bundle, class_set: ClassSet, role: str, whose: str = "") -> None:
    """Refuse a model that works beside another (a generator's validator, judge or second
    validator) unless it has their ``class_set``; ``whose`` names where that set comes from."""
    if bundle.class_set != class_set:
        raise BundleError(f"{role} class set {bundle.class_set.name!r} differs from "
                          + (f"{whose} {class_set.name!r}" if whose else repr(class_set.name)))


def load_validator_for(ref: str | os.PathLike, class_set: ClassSet) -> Validator:
    """The validator ``ref``, refused unless it scores ``class_set``: callers check this before
    hours of training, not after."""
    validator = load_bundle(ref, "validator")
    require_class_set(validator, class_set, "validator")
    return validator


