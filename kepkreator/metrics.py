"""Class-conditional sample quality from classifier probabilities: pure numpy, no framework.

Everything is computed from per-class sufficient statistics (count, sum of p, sum of p*log p,
sum of max-prob, hits), so one pass over any number of samples, in any number of pieces that are
merged later, gives exactly the same numbers as the whole array at once.

IS (Salimans et al. 2016), BCIS and WCIS (Benny et al. 2021):
  IS   = exp( E_x KL(p(y|x) || p(y)) )
  BCIS = exp( mean_c KL(p(y|c) || p(y)) )           p(y|c) = mean of p(y|x) over class c
  WCIS = exp( mean_c E_{x in c} KL(p(y|x) || p(y|c)) )
On class-balanced samples IS = BCIS * WCIS. 1 <= BCIS <= C, WCIS >= 1; a perfect conditional
generator has BCIS = C and WCIS = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def _xlogx(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.where(p > 0, p * np.log(np.maximum(p, _EPS)), 0.0)


@dataclass
class ClassStats:
    """Additive per-class statistics; ``+`` merges two of them."""
    count: np.ndarray      # (C,)
    sum_p: np.ndarray      # (C, K) sum of probability vectors
    sum_plogp: np.ndarray  # (C,)   sum over samples of sum_y p log p
    sum_conf: np.ndarray   # (C,)   sum of max-prob
    hits: np.ndarray       # (C,)   argmax == class

    @classmethod
    def zeros(cls, num_classes: int, num_outputs: int | None = None) -> "ClassStats":
        k = num_outputs or num_classes
        return cls(np.zeros(num_classes), np.zeros((num_classes, k)), np.zeros(num_classes),
                   np.zeros(num_classes), np.zeros(num_classes))

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, classes: np.ndarray,
                           num_classes: int | None = None) -> "ClassStats":
        probs = np.asarray(probs, dtype=np.float64)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        c = num_classes or probs.shape[1]
        onehot = np.zeros((len(classes), c))
        onehot[np.arange(len(classes)), classes] = 1.0
        return cls(onehot.sum(0), onehot.T @ probs, onehot.T @ _xlogx(probs).sum(1),
                   onehot.T @ probs.max(1), onehot.T @ (probs.argmax(1) == classes))

    def __add__(self, other: "ClassStats") -> "ClassStats":
        return ClassStats(self.count + other.count, self.sum_p + other.sum_p,
                          self.sum_plogp + other.sum_plogp, self.sum_conf + other.sum_conf,
                          self.hits + other.hits)

    @property
    def present(self) -> np.ndarray:
        return self.count > 0


def inception_scores(stats: ClassStats) -> dict:
    """IS, BCIS, WCIS from merged statistics (classes without samples are left out)."""
    present = stats.present
    if not present.any():
        return {"is": float("nan"), "bcis": float("nan"), "wcis": float("nan")}
    count, sum_p, sum_plogp = stats.count[present], stats.sum_p[present], stats.sum_plogp[present]
    total = count.sum()
    p_y = sum_p.sum(0) / total
    p_y_given_c = sum_p / count[:, None]
    h_marginal = _xlogx(p_y).sum()
    log_is = sum_plogp.sum() / total - h_marginal
    kl_class_marginal = _xlogx(p_y_given_c).sum(1) - p_y_given_c @ np.log(np.maximum(p_y, _EPS))
    kl_within = sum_plogp / count - _xlogx(p_y_given_c).sum(1)
    return {"is": float(np.exp(log_is)), "bcis": float(np.exp(kl_class_marginal.mean())),
            "wcis": float(np.exp(kl_within.mean()))}


def class_report(stats: ClassStats, labels: list[str] | None = None) -> dict:
    """Per-class agreement (argmax == class) and mean confidence, and their overall values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = stats.hits / stats.count
        confidence = stats.sum_conf / stats.count
    labels = labels or [str(i) for i in range(len(stats.count))]
    per_class = {labels[c]: {"samples": int(stats.count[c]),
                             "agreement": _num(agreement[c]), "mean_confidence": _num(confidence[c])}
                 for c in range(len(stats.count)) if stats.count[c]}
    total = stats.count.sum()
    return {"samples": int(total),
            "agreement": _num(stats.hits.sum() / total) if total else None,
            "mean_confidence": _num(stats.sum_conf.sum() / total) if total else None,
            "per_class": per_class, **inception_scores(stats)}


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), via symmetric eigendecompositions."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def nearest_distances(queries: np.ndarray, query_labels: np.ndarray, references: np.ndarray,
                      reference_labels: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Pixel L2 distance (images scaled to [0, 1]) from every query image to the nearest
    reference image of its own class; inf where that class has no reference.

    Pixels rather than features: a copy is a copy whatever a classifier thinks of it. Chunked
    both ways so memory stays at ``chunk``² floats whatever the sizes."""
    flat_q = np.asarray(queries, np.float32).reshape(len(queries), -1) / 255
    flat_r = np.asarray(references, np.float32).reshape(len(references), -1) / 255
    query_labels, reference_labels = np.ravel(query_labels), np.ravel(reference_labels)
    out = np.full(len(flat_q), np.inf)
    for c in np.unique(query_labels):
        rows, refs = np.flatnonzero(query_labels == c), flat_r[reference_labels == c]
        ref_sq = (refs * refs).sum(1)
        for start in range(0, len(rows), chunk):
            q = flat_q[rows[start:start + chunk]]
            best = np.full(len(q), np.inf)
            for r0 in range(0, len(refs), chunk):
                d2 = ((q * q).sum(1)[:, None] - 2 * q @ refs[r0:r0 + chunk].T
                      + ref_sq[None, r0:r0 + chunk])
                best = np.minimum(best, d2.min(1))
            out[rows[start:start + chunk]] = np.sqrt(np.clip(best, 0, None))
    return out


def copying_report(generated: np.ndarray, real: np.ndarray, quantile: float = 0.01) -> dict:
    """Does the generator hand back its training images? ``generated``/``real``: nearest-
    training-image distances of generated samples and of held-out real images.

    Held-out real images say how close new data of this kind falls to the training set by
    chance (the data-copying test of Meehan et al. 2020 in spirit): a generator that makes new
    samples has about ``quantile`` of them nearer than real's ``quantile`` and a distance ratio
    near 1; one that copies has many near copies and a ratio well below 1."""
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    generated, real = generated[np.isfinite(generated)], real[np.isfinite(real)]
    if not len(generated) or not len(real):
        raise ValueError("no class has both training images and samples to compare")
    threshold = float(np.quantile(real, quantile))
    median_generated, median_real = float(np.median(generated)), float(np.median(real))
    return {"median_distance_generated": median_generated, "median_distance_real": median_real,
            "distance_ratio": median_generated / median_real if median_real > 0 else None,
            "near_copy_threshold": threshold, "near_copies": float(np.mean(generated < threshold)),
            "near_copies_expected": quantile, "generated_compared": len(generated),
            "real_compared": len(real)}
