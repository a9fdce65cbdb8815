"""``card.json``, the half of a bundle that says what its model is and how to drive it.

Every field is checked for its type and range before anything uses it, so a wrong card is one
line naming the field, never a ValueError from deep in sampling code; and the model file must be
a plain name inside the bundle whose sha256 matches the card's, so a bundle proves which weights
it holds.
"""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from kepkreator.errors import BundleError

CARD_NAME = "card.json"
MODEL_FILE = "model.keras"  # what write_bundle saves; imported bundles may name another
CARD_FORMAT = "kepkreator-bundle/1"
KINDS = ("generator", "validator")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
RANGES = ("tanh", "sigmoid", "uint8")  # [-1, 1], [0, 1], [0, 255]
ORIENTATIONS = ("upright", "emnist")
LABEL_ENCODINGS = ("int", "onehot")
LABEL_DTYPES = ("int32", "int64", "float32")
VALIDATOR_OUTPUTS = ("probabilities", "logits")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _count(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _one_of(choices):
    return lambda v: isinstance(v, str) and v in choices


def _positive_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


def _plain_model_name(v) -> bool:
    """A file name in the bundle itself: no folder part, no '..', no absolute path."""
    return (isinstance(v, str) and v == Path(v).name and v not in ("", ".", "..")
            and "\\" not in v)


def _confidence(v) -> bool:
    """One threshold, or {class or 'default': threshold}; classes are checked by the spec."""
    ok = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1
    return ok(v) or (isinstance(v, dict) and all(isinstance(k, str) and ok(x)
                                                  for k, x in v.items()))


# field: (check, what a valid value is), for the card and for each kind's signature.
CARD_FIELDS = {
    "format": (_text, "a format name"),
    "kind": (_one_of(KINDS), f"one of {', '.join(KINDS)}"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "class_set": (_text, "a class-set name"),
    "labels": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
               "a list of strings"),
    "model_file": (_plain_model_name, "a plain file name inside the bundle"),
    "model_sha256": (lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)),
                     "64 lower-case hex digits"),
    "signature": (lambda v: isinstance(v, dict), "an object"),
    "sampling": (lambda v: isinstance(v, dict), "an object"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "training": (lambda v: isinstance(v, dict), "an object"),
    "architecture": (lambda v: isinstance(v, dict), "an object"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "reference": (lambda v: isinstance(v, dict) and _plain_model_name(v.get("file"))
                  and isinstance(v.get("sha256"), str) and bool(_SHA256.fullmatch(v["sha256"])),
                  "{file: a plain file name inside the bundle, sha256, ...}"),
    "notes": (lambda v: isinstance(v, str), "a string"),
}
SAMPLING_FIELDS = {
    "latent_scale": (_positive_number, "a positive number"),
    "min_confidence": (_confidence, "a number in [0, 1] or {class: number in [0, 1]}"),
    "cas_tolerance": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and 0 <= v < 1, "a number in [0, 1)"),
}
_COMMON_SIGNATURE = {"orientation": (_one_of(ORIENTATIONS), f"one of {', '.join(ORIENTATIONS)}")}
SIGNATURE_FIELDS = {
    "generator": {
        **_COMMON_SIGNATURE,
        "inputs": (lambda v: isinstance(v, list) and sorted(map(str, v)) == ["label", "z"]
                   and all(isinstance(x, str) for x in v), "the list ['z', 'label'] in any order"),
        "latent_dim": (_count(1), "a whole number of at least 1"),
        "output_range": (_one_of(RANGES), f"one of {', '.join(RANGES)}"),
        "label_encoding": (_one_of(LABEL_ENCODINGS), f"one of {', '.join(LABEL_ENCODINGS)}"),
        "label_shape": (lambda v: isinstance(v, list) and 0 < len(v) <= 4
                        and all(_count(1)(x) for x in v), "a list of positive whole numbers"),
        "label_dtype": (_one_of(LABEL_DTYPES), f"one of {', '.join(LABEL_DTYPES)}"),
        "label_offset": (_count(0), "a whole number of at least 0"),
        "label_classes": (_count(1), "a whole number of at least 1"),
    },
    "validator": {
        **_COMMON_SIGNATURE,
        "input_range": (_one_of(RANGES), f"one of {', '.join(RANGES)}"),
        "output": (_one_of(VALIDATOR_OUTPUTS), f"one of {', '.join(VALIDATOR_OUTPUTS)}"),
        "features_layer": (_text, "a layer name"),
    },
}
REQUIRED = ("kind", "class_set", "model_file", "signature")
REQUIRED_SIGNATURE = {"generator": ("latent_dim", "output_range"), "validator": ("input_range",)}


def _check_fields(values: dict, fields: dict, where: str, prefix: str = "",
                  strict: bool = False) -> None:
    for key, value in values.items():
        if key not in fields:
            if strict:
                raise BundleError(f"{where}: unknown key '{prefix}{key}' (known: "
                                  f"{', '.join(fields)})")
            continue
        check, wanted = fields[key]
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise BundleError(f"{where}: {prefix}{key} must be {wanted}, not {shown}")


def check_card(card, where, required=REQUIRED) -> None:
    """Every field a card may carry has the right type and range (one line naming the first
    that does not); ``required`` must be present. Free-form records (metrics, training) are only
    checked to be objects."""
    if not isinstance(card, dict):
        raise BundleError(f"{where}: a card must be a JSON object, got {type(card).__name__}")
    for key in required:
        if key not in card:
            raise BundleError(f"{where} lacks the key {key!r}")
    _check_fields(card, CARD_FIELDS, where)
    kind = card["kind"]
    signature = card["signature"]
    _check_fields(signature, SIGNATURE_FIELDS[kind], where, "signature.", strict=True)
    for key in REQUIRED_SIGNATURE[kind]:
        if key not in signature:
            raise BundleError(f"{where}: card signature lacks {key!r}")
    _check_fields(card.get("sampling", {}), SAMPLING_FIELDS, where, "sampling.")


def read_card(path: Path) -> dict:
    """A bundle's card, checked field by field and against its model file's sha256."""
    import json
    try:
        card = json.loads((path / CARD_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"malformed {path / CARD_NAME}: {exc}") from None
    except UnicodeDecodeError:
        raise BundleError(f"malformed {path / CARD_NAME}: not UTF-8 text") from None
    check_card(card, path / CARD_NAME, REQUIRED + ("model_sha256",))
    return card


def verify_model_file(path: Path, card: dict) -> Path:
    """The bundle's model file, once its bytes are the ones the card names: a bundle folder
    with another model copied in must not load under the card's name and evidence."""
    model_file = path / card["model_file"]
    if not model_file.is_file():
        raise BundleError(f"bundle {path} lacks its model file {card['model_file']}")
    if sha256_file(model_file) != card["model_sha256"]:
        raise BundleError(f"bundle {path}: {card['model_file']} is not the model its card "
                          f"describes (sha256 differs from model_sha256 "
                          f"{card['model_sha256'][:12]}...)")
    return model_file


def choose_setting(rows: list[dict], floor: dict, cas_tolerance: float = 0.0) -> dict | None:
    """The sampling scan's choice among its ``rows``: of those that meet every ``floor`` (a
    figure of the row >= its value; 0 or None: no floor), the highest CAS (``cas_mean``). Rows
    within ``cas_tolerance`` of it count as tied, since a difference that small is seed noise,
    and of those the one whose kept samples reach the most real neighbourhoods (coverage) wins.
    None where no row meets the floor."""
    floor = {k: v for k, v in (floor or {}).items() if v}
    eligible = [r for r in rows if isinstance(r, dict)
                and all((r.get(k) or 0) >= v for k, v in floor.items())]
    if not eligible:
        return None
    top = max(r.get("cas_mean", 0) for r in eligible)
    tied = [r for r in eligible if r.get("cas_mean", 0) >= top - cas_tolerance]
    return max(tied, key=lambda r: (r.get("coverage") or 0, r.get("cas_mean", 0)))


def card_latent_scale(card: dict, threshold: float | None = None,
                      realism: float | None = None) -> float:
    """A generator card's sampling choice (``kepkreator tune-sampling``), else 1. With a
    ``threshold`` the caller chose itself: the scale the card's scan chooses among its rows at
    that threshold and ``realism`` strength (``choose_setting``, under the scan's floor and CAS
    tolerance), since a widened scale that suits a strict filter hands a laxer one malformed
    samples. A realism strength the scan did not try gets the threshold's rows without the
    realism filter: that filter only removes samples, so their scale stays safe. The card's
    choice where the scan has no row at the threshold."""
    sampling = card.get("sampling") or {}
    chosen = float(sampling.get("latent_scale", 1.0))
    if threshold is None:
        return chosen
    at_threshold = [r for r in sampling.get("scan") or []
                    if isinstance(r, dict) and r.get("min_confidence") == threshold]
    rows = ([r for r in at_threshold if r.get("realism") == realism]
            or [r for r in at_threshold if r.get("realism") is None])
    best = choose_setting(rows, sampling.get("fidelity_floor") or {},
                          float(sampling.get("cas_tolerance", 0.0)))
    return chosen if best is None else float(best["latent_scale"])
