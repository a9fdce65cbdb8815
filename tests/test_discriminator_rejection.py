"""experiments/discriminator_rejection.py: the per-class choice behind docs/sampling.md's
*Two more attempts*."""
import numpy as np

from experiments.discriminator_rejection import top_of_each_class


def test_each_class_keeps_its_best_ranked_share_of_the_candidates_only():
    labels = np.array([0] * 6 + [1] * 4)
    ranked = np.array([5., 1., 4., 2., 3., 0., 9., 7., 8., 6.])
    candidates = np.ones(10, bool)
    candidates[0] = False  # the best of class 0 is not a candidate: it must not be kept
    keep = top_of_each_class(ranked, candidates, labels, 0.6)
    assert np.flatnonzero(keep).tolist() == [2, 3, 4, 6, 8]  # 3 of 5; 2 of 4 (2.4 rounds to 2)
    assert not top_of_each_class(ranked, candidates, labels, 0.0).any()
    assert (top_of_each_class(ranked, candidates, labels, 1.0) == candidates).all()
