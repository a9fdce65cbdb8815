"""Class splitting: train the GAN on several "modes" per class, sample the class as a mixture.

A conditional GAN asked for "A" tends to settle on one way of writing it (capital or small) and
drop the other: the discriminator accepts either, so nothing pushes the generator to cover both.
Clustering every class into ``k`` modes and conditioning on the mode (Grinblat et al. 2017,
"Class-splitting GANs") makes each mode a label the discriminator checks, so every mode must be
drawn. The exported generator still takes the class: it picks a mode itself, in proportion to
the modes' share of the training data (``networks.ModeChoice``).
"""
from __future__ import annotations

import numpy as np

PCA_DIMS = 40  # enough to separate shapes (case, loops, bars), cheap for k-means


def kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 5,
           iterations: int = 50) -> np.ndarray:
    """Cluster index of every point: the tightest of a few k-means++ starts, Lloyd iterations
    until nothing moves (one start alone often splits the big mode and merges the small ones)."""
    rng = np.random.default_rng(seed)
    best, best_spread = None, np.inf
    for _ in range(restarts):
        centres = points[rng.choice(len(points), 1)]
        for _ in range(k - 1):
            gap = ((points[:, None] - centres[None]) ** 2).sum(-1).min(1)
            pick = (rng.choice(len(points), p=gap / gap.sum()) if gap.sum() > 0
                    else rng.integers(len(points)))
            centres = np.vstack([centres, points[pick]])
        assignment = np.full(len(points), -1)
        for _ in range(iterations):
            distances = ((points[:, None] - centres[None]) ** 2).sum(-1)
            new = distances.argmin(1)
            if np.array_equal(new, assignment):
                break
            assignment = new
            centres = np.stack([points[assignment == j].mean(0) if (assignment == j).any()
                                else centres[j] for j in range(k)])
        spread = ((points - centres[assignment]) ** 2).sum()
        if spread < best_spread:
            best, best_spread = assignment, spread
    return best


def split_into_modes(images: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mode labels ``label * k + mode``, (num_classes, k) share of each mode in its class).

    Modes are k-means clusters of each class in a PCA projection of the pixels; modes are
    numbered by size (0 the largest) so the numbering does not depend on k-means' start.
    """
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    centred = x - x.mean(0)
    sample = centred[np.random.default_rng(seed).permutation(len(x))[:20000]]
    basis = np.linalg.svd(sample, full_matrices=False)[2][:PCA_DIMS]
    projected = centred @ basis.T
    mode_labels = np.zeros(len(labels), np.int32)
    shares = np.zeros((num_classes, k), np.float64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:  # a class without data: its modes are all equally unknown
            shares[c] = 1.0 / k
            continue
        clusters = (kmeans(projected[members], k, seed + c) if len(members) >= k
                    else np.arange(len(members)) % k)
        sizes = np.bincount(clusters, minlength=k)
        rank = np.empty(k, int)
        rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
        mode_labels[members] = c * k + rank[clusters]
        shares[c] = np.sort(sizes)[::-1] / len(members)
    return mode_labels, shares
