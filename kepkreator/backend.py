"""Which Keras backend runs the models.

Generation needs Keras alone, on any backend: the lean runtime (``pip install .``) is Keras on
JAX, a third of TensorFlow's size. Training, tuning and the studies use ``tf.data`` and
TensorFlow's gradient tape, so they need TensorFlow (``pip install '.[train]'``). Where both are
installed TensorFlow runs everything, being the faster of the two for these models on a CPU.
"""
from __future__ import annotations

import importlib.util
import os

from kepkreator.errors import KepKreatorError

PREFERENCE = ("tensorflow", "jax")


def choose_keras_backend() -> str | None:
    """KERAS_BACKEND where set; else the first installed of PREFERENCE, set for Keras to read at
    import (and for Beam's worker processes, which inherit the environment). None: neither is
    installed, which the first model load reports."""
    chosen = os.environ.get("KERAS_BACKEND")
    if not chosen:
        chosen = next((name for name in PREFERENCE if importlib.util.find_spec(name)), None)
        if chosen:
            os.environ["KERAS_BACKEND"] = chosen
    return chosen


def keras_backend() -> str:
    """The backend Keras runs on, importing Keras; one line where none is installed."""
    if choose_keras_backend() is None:
        raise KepKreatorError("no Keras backend is installed: pip install jax==0.10.2 "
                              "(or kepkreator[train] for TensorFlow)")
    import keras
    return keras.backend.backend()


def require_tensorflow(what: str) -> None:
    """One line, before any work, where ``what`` cannot run: TensorFlow missing, or Keras set to
    another backend."""
    if importlib.util.find_spec("tensorflow") is None:
        raise KepKreatorError(f"{what} needs TensorFlow, which this install lacks: "
                              "pip install 'kepkreator[train]'")
    if keras_backend() != "tensorflow":
        raise KepKreatorError(f"{what} needs Keras on TensorFlow, but KERAS_BACKEND is "
                              f"{os.environ.get('KERAS_BACKEND')!r}: unset it or set it to "
                              "tensorflow")
