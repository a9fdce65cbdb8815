import numpy as np
import pytest

from kepkreator.metrics import (ClassStats, class_report, copying_report, frechet_distance,
                                inception_scores, nearest_distances)


def scores(probs, classes):
    return inception_scores(ClassStats.from_probabilities(np.asarray(probs), np.asarray(classes)))


def test_perfect_conditional_generator():
    classes = np.repeat(np.arange(4), 5)
    s = scores(np.eye(4)[classes], classes)
    assert s["is"] == pytest.approx(4) and s["bcis"] == pytest.approx(4)
    assert s["wcis"] == pytest.approx(1)


def test_uniform_predictions_score_one():
    s = scores(np.full((12, 3), 1 / 3), np.repeat(np.arange(3), 4))
    assert s == pytest.approx({"is": 1.0, "bcis": 1.0, "wcis": 1.0})


def test_label_blind_but_confident_generator():
    # Confident one-hot outputs that ignore the requested class: IS high, BCIS 1, WCIS = IS.
    classes = np.repeat(np.arange(2), 2)
    probs = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], float)
    s = scores(probs, classes)
    assert s["is"] == pytest.approx(2) and s["bcis"] == pytest.approx(1)
    assert s["wcis"] == pytest.approx(2)


def test_exact_values_on_a_hand_built_array():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    classes = np.array([0, 0, 1, 1])
    p_y = probs.mean(0)                       # [0.45, 0.55]
    kl = lambda p, q: float(np.sum(p * np.log(p / q)))
    expected_is = np.exp(np.mean([kl(p, p_y) for p in probs]))
    p_c = np.array([probs[:2].mean(0), probs[2:].mean(0)])  # [.7,.3], [.2,.8]
    expected_bcis = np.exp(np.mean([kl(p_c[0], p_y), kl(p_c[1], p_y)]))
    expected_wcis = np.exp(np.mean([np.mean([kl(p, p_c[c]) for p in probs[classes == c]])
                                    for c in (0, 1)]))
    s = scores(probs, classes)
    assert s["is"] == pytest.approx(expected_is, rel=1e-9)
    assert s["bcis"] == pytest.approx(expected_bcis, rel=1e-9)
    assert s["wcis"] == pytest.approx(expected_wcis, rel=1e-9)
    assert s["bcis"] == pytest.approx(np.exp(0.5 * (0.7 * np.log(.7 / .45) + .3 * np.log(.3 / .55)
                                                    + .2 * np.log(.2 / .45) + .8 * np.log(.8 / .55))))


def test_is_factorises_and_bounds_hold_on_random_balanced_samples():
    rng = np.random.default_rng(0)
    for c in (2, 10, 26):
        logits = rng.normal(size=(50 * c, c)) * rng.uniform(0.1, 5)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        s = scores(probs, np.repeat(np.arange(c), 50))
        assert s["is"] == pytest.approx(s["bcis"] * s["wcis"], rel=1e-9)
        assert 1 - 1e-9 <= s["bcis"] <= c + 1e-9 and s["wcis"] >= 1 - 1e-9


def test_merged_statistics_equal_the_whole():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=300)
    classes = rng.integers(0, 5, 300)
    whole = ClassStats.from_probabilities(probs, classes)
    parts = [ClassStats.from_probabilities(probs[i:i + 70], classes[i:i + 70], 5)
             for i in range(0, 300, 70)]
    merged = sum(parts[1:], parts[0])
    assert inception_scores(merged) == pytest.approx(inception_scores(whole))
    report = class_report(merged, list("abcde"))
    assert report["samples"] == 300
    assert report["agreement"] == pytest.approx(np.mean(probs.argmax(1) == classes))


def test_frechet_distance():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shifted = a + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, shifted) == pytest.approx(5.0, rel=1e-6)
    scaled = a * 2  # N(0, I) vs N(0, 4I): 3 * (1 + 4 - 2*2) = 3
    assert frechet_distance(a, scaled) == pytest.approx(3.0, rel=0.05)


def _strokes(rng, n):
    """Random uint8 "images": a few bright bars on black, varied enough that no two coincide."""
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
        for _ in range(3):
            r, c = rng.integers(2, 24, 2)
            image[r:r + rng.integers(2, 5), c:c + rng.integers(2, 5)] = 255
    return images


def test_nearest_distances_match_brute_force_and_stay_within_class():
    rng = np.random.default_rng(3)
    refs, queries = _strokes(rng, 70), _strokes(rng, 30)
    ref_labels, query_labels = rng.integers(0, 3, 70), rng.integers(0, 4, 30)  # class 3: no refs
    got = nearest_distances(queries, query_labels, refs, ref_labels, chunk=7)
    for q, label, d in zip(queries / 255, query_labels, got):
        same = refs[ref_labels == label] / 255
        want = np.sqrt(((same - q) ** 2).sum((1, 2))).min() if len(same) else np.inf
        assert d == pytest.approx(want, abs=1e-3)
    assert np.isinf(got[query_labels == 3]).all()


def test_copying_report_tells_copies_from_new_samples():
    rng = np.random.default_rng(4)
    train, held_out, new = _strokes(rng, 400), _strokes(rng, 400), _strokes(rng, 400)
    labels = np.zeros(400, int)
    real = nearest_distances(held_out, labels, train, labels)
    speckled = np.clip(train + rng.integers(-20, 20, train.shape), 0, 255)  # faint noise
    copies = nearest_distances(speckled, labels, train, labels)
    fresh = nearest_distances(new, labels, train, labels)
    copied, honest = copying_report(copies, real), copying_report(fresh, real)
    assert copied["near_copies"] > 0.9 and copied["distance_ratio"] < 0.5
    assert honest["near_copies"] < 0.05 and 0.8 < honest["distance_ratio"] < 1.25
    with pytest.raises(ValueError, match="no class has both"):
        copying_report(np.full(3, np.inf), real)
