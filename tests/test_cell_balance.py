"""experiments/cell_balance.py: the balanced choice behind docs/sampling.md's eighth attempt."""
import numpy as np

from experiments.cell_balance import balanced_pick, nearest_cell


def test_every_cell_gives_one_before_any_gives_a_second():
    cells = np.array([0] * 10 + [1] * 2 + [2] * 1 + [3] * 4)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        picked = balanced_pick(cells, 7, rng)
        assert len(picked) == len(set(picked)) == 7
        # four cells once each, then the three that have a second row
        assert np.bincount(cells[picked], minlength=4).tolist() == [2, 2, 1, 2]
        assert (np.diff(picked) > 0).all()  # in candidate order
    assert np.bincount(cells[balanced_pick(cells, 100, np.random.default_rng(0))]).tolist() == \
        [10, 2, 1, 4]  # a budget above the pool takes it all


def test_nearest_cell_matches_brute_force():
    rng = np.random.default_rng(0)
    real, samples = rng.normal(size=(50, 8)), rng.normal(size=(300, 8))
    brute = ((samples[:, None, :] - real[None]) ** 2).sum(-1).argmin(1)
    assert (nearest_cell(samples.astype(np.float32), real.astype(np.float32), chunk=64)
            == brute).all()
