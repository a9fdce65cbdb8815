"""Where samples fall against real data, in a classifier's feature space: fidelity and
diversity measured apart, and the test the realism filter applies.

A reference bank holds the features of M real images per class and each one's k-nearest-
neighbour radius among its own class. Against it, with x_i the real features, r_i their radii,
y_j the M' samples' features and s_j their k-NN radii among the samples, all per class:

  precision = 1/M' sum_j 1[y_j in some B(x_i, r_i)]       fidelity: samples inside the real
                                                           manifold (Kynkäänniemi et al. 2019)
  recall    = 1/M sum_i 1[x_i in some B(y_j, s_j)]         diversity: real images inside the
                                                           samples' manifold (same paper)
  density   = 1/(kM') sum_j sum_i 1[y_j in B(x_i, r_i)]   fidelity: real neighbourhoods a sample
                                                           falls in (about 1 for real data;
                                                           Naeem et al. 2020)
  coverage  = 1/M sum_i 1[some y_j in B(x_i, r_i)]         diversity: real neighbourhoods reached

Precision and recall are sensitive to outliers (an odd image's wide ball takes in much), which
density and coverage resist; the reports give all four. The realism filter applies the precision
test, with the radii scaled by its strength.

All four depend on the number of samples, so reports compare M' = M samples per class with the
yardstick: M other real images per class measured against the same bank. One draw of M moves
precision by about 0.01, so reports average up to CHUNKS disjoint draws of M samples each.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from kepkreator.errors import BundleError

BANK_FILE = "reference.npz"
NEIGHBOURS = 5  # k: Naeem et al.'s choice, stable from a few hundred images per class
# What a comparison with the bank reports, per class and overall: one list for every report.
FIGURES = ("precision", "recall", "density", "coverage")
CHUNKS = 4  # disjoint M-sample draws per class that a report of generated samples averages


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances; one matrix product, so chunk large inputs."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.clip(d2, 0, None)


def knn_radii(features: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    d2 = squared_distances(features, features)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])


def figures_text(row: dict, separator: str = "  ") -> str:
    """``precision 0.931  recall 0.933 ...`` for the FIGURES a report holds (older reports
    hold density and coverage only)."""
    return separator.join(f"{key} {row[key]:.3f}" for key in FIGURES if row.get(key) is not None)


def draws_text(fidelity: dict) -> str:
    """``400 per class`` or ``mean of 2 draws of 400 per class`` for a pipeline's fidelity
    report (those made before draws were averaged have no ``draws_per_class``)."""
    draws, size = fidelity.get("draws_per_class", 1), fidelity["samples_per_class"]
    return f"{size} per class" if draws == 1 else f"mean of {draws} draws of {size} per class"


@dataclass
class ReferenceBank:
    features: np.ndarray  # (N, D) float32 real features
    labels: np.ndarray    # (N,) class index
    radii: np.ndarray     # (N,) k-NN radius within its class
    k: int = NEIGHBOURS

    @classmethod
    def build(cls, features: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS):
        features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
        radii = np.zeros(len(labels), np.float32)
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            if len(rows) <= k:
                raise ValueError(f"class {c} has {len(rows)} reference images; k={k} needs more")
            radii[rows] = knn_radii(features[rows], k)
        return cls(features, labels, radii, k)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=self.features.astype(np.float16),
                            labels=self.labels.astype(np.int16), radii=self.radii,
                            k=np.int64(self.k))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "reference bank"):
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                bank = cls(z["features"].astype(np.float32), z["labels"].astype(np.int64),
                           z["radii"].astype(np.float32), int(z["k"]))
        except (ValueError, KeyError, OSError) as exc:
            raise BundleError(f"{where}: not a reference bank ({exc})") from None
        if not (len(bank.features) == len(bank.labels) == len(bank.radii)):
            raise BundleError(f"{where}: features, labels and radii differ in length")
        return bank

    def of_class(self, c: int):
        rows = self.labels == c
        return self.features[rows], self.radii[rows]

    def inside(self, features: np.ndarray, labels: np.ndarray, strength: float = 1.0,
               chunk: int = 2048) -> np.ndarray:
        """True where a sample lies within ``strength`` x the radius of some real image of its
        own class (a class without reference images lets its samples through)."""
        features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
        out = np.ones(len(labels), bool)
        for c in np.unique(labels):
            real, radii = self.of_class(int(c))
            if not len(real):
                continue
            rows = np.flatnonzero(labels == c)
            for lo in range(0, len(rows), chunk):
                part = rows[lo:lo + chunk]
                d2 = squared_distances(features[part], real)
                out[part] = (d2 <= (strength * radii[None, :]) ** 2).any(1)
        return out

    def compare(self, features: np.ndarray, labels: np.ndarray, chunk: int = 0) -> dict:
        """The FIGURES per class and overall (the mean over classes with samples and reference
        images). ``chunk`` M > 0: each class's samples are cut, in order, into disjoint draws of
        M (a class with fewer than M is one draw), and a class's figures are the mean over its
        draws. Recall needs the samples' own k-NN radii, so a draw of k samples or fewer has
        none, and a mean leaves such draws out."""
        features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
        per_class = {}
        for c in np.unique(labels):
            real, radii = self.of_class(int(c))
            if not len(real):
                continue
            samples = features[labels == c]
            size = chunk if 0 < chunk <= len(samples) else len(samples)
            draws = [self._figures(samples[lo:lo + size], real, radii)
                     for lo in range(0, len(samples) - size + 1, size)]
            per_class[int(c)] = {**_mean_figures(draws), "samples": int(len(draws) * size),
                                 "draws": len(draws), "reference": int(len(real))}
        return {**_mean_figures(per_class.values()), "per_class": per_class}

    def _figures(self, samples: np.ndarray, real: np.ndarray, radii: np.ndarray) -> dict:
        d2 = squared_distances(samples, real)  # (samples, real), read both ways below
        within = d2 <= radii[None, :] ** 2
        recall = None
        if len(samples) > self.k:
            recall = float((d2 <= knn_radii(samples, self.k)[:, None] ** 2).any(0).mean())
        return {"precision": float(within.any(1).mean()), "recall": recall,
                "density": float(within.sum() / (self.k * len(within))),
                "coverage": float(within.any(0).mean())}


def _mean_figures(rows) -> dict:
    """Each of the FIGURES averaged over the rows that have it (None where none has)."""
    rows = list(rows)
    out = {}
    for key in FIGURES:
        values = [row[key] for row in rows if row[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
