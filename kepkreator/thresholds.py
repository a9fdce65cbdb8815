"""The validator filter's confidence thresholds: one parser, one formatter.

A threshold is ``0.9``, or a default with classes of their own, ``{default: 0.9, I: 0.5}`` in a
spec or a card and ``0.9,I=0.5`` on a command line. Each is a number in [0, 1); 0 turns the
filter off for its classes.
"""
from __future__ import annotations

import numpy as np

from kepkreator.errors import KepKreatorError


def _threshold(value, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        import json
        shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
        raise KepKreatorError(f"{where} must be a number in [0, 1), got {shown}")
    return float(value)


def parse_thresholds(value, where: str = "min_confidence",
                     class_set=None) -> tuple[float | None, dict[str, float]]:
    """(default or None where only classes are given, {class: threshold}). ``value``: a number,
    a map, or the command line's ``0.9,I=0.5``; ``class_set``: the classes a map may name."""
    if isinstance(value, str):
        parts = {}
        for part in value.split(","):
            name, sep, number = part.rpartition("=")
            try:
                parts[name.strip() if sep else "default"] = float(number)
            except ValueError:
                raise KepKreatorError(f"{where}: {value!r} should be a threshold in [0, 1), "
                                      "optionally followed by CLASS=threshold pairs, e.g. "
                                      "0.9,I=0.5") from None
        value = parts["default"] if list(parts) == ["default"] else parts
    if not isinstance(value, dict):
        return _threshold(value, where), {}
    default, per_class = None, {}
    for key, threshold in value.items():
        key = str(key)
        if key == "default":
            default = _threshold(threshold, f"{where}.default")
            continue
        if class_set is not None and key not in class_set.chars:
            raise KepKreatorError(f"{where}: class {key!r} is not in class set "
                                  f"{class_set.name!r} (or use the key default)")
        per_class[key] = _threshold(threshold, f"{where}.{key}")
    return default, per_class


def thresholds_value(default: float | None, per_class: dict[str, float]):
    """The spec's spelling: a number, or a map with its default first."""
    if not per_class:
        return default
    return {**({"default": default} if default is not None else {}), **per_class}


def format_thresholds(value) -> str:
    """As a person reads them: ``0.9``, or ``0.9 (I: 0.5, L: 0.7)``."""
    default, per_class = parse_thresholds(value)
    extra = ", ".join(f"{k}: {v:g}" for k, v in sorted(per_class.items()))
    return f"{0.9 if default is None else default:g}" + (f" ({extra})" if extra else "")


def sure_of(probabilities: np.ndarray, labels: np.ndarray, threshold) -> np.ndarray:
    """Which samples a classifier gives their ``labels`` as its top class with probability at
    least ``threshold`` (one number, or one per sample): the confidence filter's test, for the
    validator and the second validator alike. A threshold of 0 turns the test off."""
    threshold = np.asarray(threshold, probabilities.dtype)  # compared as the pipeline stores it
    on_label = probabilities[np.arange(len(labels)), labels]
    return (threshold <= 0) | ((probabilities.argmax(1) == labels) & (on_label >= threshold))
