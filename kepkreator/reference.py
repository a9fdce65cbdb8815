"""A classifier bundle's reference bank: features of real images, kept beside the model.

The judge's bank is what fidelity and diversity are measured against (precision, recall,
density and coverage: ``kepkreator.manifold``); the validator's bank is what the realism filter
tests samples against. Both come from real data by ``kepkreator reference``, which also
measures the yardstick: M *other* real images per class against the bank, the figures a
generator's samples are compared with. The bank's sha256 goes into the card, and loading checks it.
"""
from __future__ import annotations

import hashlib
import json
import os
import numpy as np

from kepkreator.errors import DataError
from kepkreator.manifold import BANK_FILE, NEIGHBOURS, ReferenceBank, figures_text
from kepkreator.models.card import CARD_NAME


def _two_draws(labels: np.ndarray, num_classes: int, per_class: int, seed: int):
    """Disjoint random picks of ``per_class`` images of every class: the bank and the
    yardstick's other real images."""
    rng = np.random.default_rng(seed)
    bank, other, short = [], [], []
    for c in range(num_classes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) < 2 * per_class:
            short.append(f"{c} ({len(rows)})")
        bank.append(rows[:per_class])
        other.append(rows[per_class:2 * per_class])
    if short:
        raise DataError(f"a reference bank of {per_class} per class and as many others for the "
                        f"yardstick needs {2 * per_class} images of each class; class indices "
                        f"with fewer: {', '.join(short[:10])}")
    return np.concatenate(bank), np.concatenate(other)


def add_reference_bank(bundle_ref: str, data, sources: dict, per_class: int = 500,
                       seed: int = 0) -> dict:
    """Write ``reference.npz`` into the bundle and its description into the card; returns it.
    ``data``: a Dataset of real images in the bundle's class set; ``sources``: how it was
    chosen, for the card."""
    from kepkreator.models.bundle import load_bundle
    bundle = load_bundle(bundle_ref, "validator")
    if data.class_set != bundle.class_set:
        raise DataError(f"the data's class set {data.class_set.name!r} is not the bundle's "
                        f"{bundle.class_set.name!r}")
    bank_rows, other_rows = _two_draws(data.labels, bundle.class_set.num_classes, per_class, seed)
    _, features = bundle.scores(data.images[np.concatenate([bank_rows, other_rows])])
    bank = ReferenceBank.build(features[:len(bank_rows)], data.labels[bank_rows], NEIGHBOURS)
    yardstick = bank.compare(features[len(bank_rows):], data.labels[other_rows])
    chars = bundle.class_set.chars
    yardstick["per_class"] = {chars[c]: row for c, row in yardstick["per_class"].items()}
    blob = bank.to_bytes()
    (bundle.path / BANK_FILE).write_bytes(blob)
    info = {"file": BANK_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "k": NEIGHBOURS,
            "per_class": per_class, "seed": seed, "data": sources,
            "features_layer": bundle.signature.get("features_layer"),
            "yardstick": {"what": f"{per_class} other real images per class against the bank",
                          **yardstick}}
    card = {**bundle.card, "reference": info}
    tmp = bundle.path / (CARD_NAME + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, bundle.path / CARD_NAME)
    return info


def bank_summary(info: dict) -> str:
    return (f"reference bank: {info['per_class']} real images per class (k={info['k']}); "
            f"yardstick, {info['per_class']} other real per class: "
            + figures_text(info["yardstick"], ", "))
