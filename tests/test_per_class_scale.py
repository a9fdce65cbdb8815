"""experiments/per_class_scale.py: per-class scales chosen from a scan's files alone."""
import json

from experiments.per_class_scale import choose_scales


def _scan(root, table):
    """table: {scale: {class: (judge agreement on the kept, validation recall)}}, threshold 0.99."""
    (root / "runs").mkdir(parents=True)
    rows = [{"latent_scale": s, "min_confidence": 0.99} for s in table]
    rows.append({"latent_scale": 3.0, "min_confidence": 0.9})  # another threshold: ignored
    (root / "sampling.json").write_text(json.dumps({"scales": rows}))
    for scale, classes in table.items():
        name = f"scale{scale:g}-conf0.99"
        (root / f"synthetic-{name}").mkdir()
        (root / f"synthetic-{name}" / "metrics.json").write_text(json.dumps({"per_class": {
            c: {"judge_agreement_accepted": judge} for c, (judge, _) in classes.items()}}))
        (root / "runs" / f"{name}-seed0.json").write_text(json.dumps({"per_class": {
            c: recall for c, (_, recall) in classes.items()}}))


def test_each_class_gets_its_best_scale_above_the_floor(tmp_path):
    _scan(tmp_path, {
        1.5: {"0": (1.0, 0.98), "1": (1.0, 0.99), "2": (0.999, 0.97), "3": (0.99, 0.90)},
        2.0: {"0": (0.999, 0.99), "1": (0.99, 0.995), "2": (0.99, 0.96), "3": (0.98, 0.95)}})
    # class 1 recalls best at 2, where the judge doubts its samples; class 3 meets the floor
    # nowhere and stays at the narrowest scale
    want = {"0": 2.0, "1": 1.5, "2": 1.5, "3": 1.5}
    assert choose_scales(tmp_path, 0.99, "recall", 0.998) == want
    assert choose_scales(tmp_path, 0.99, "widest", 0.998) == want
    assert choose_scales(tmp_path, 0.99, "widest", 0.98) == {"0": 2.0, "1": 2.0, "2": 2.0,
                                                             "3": 2.0}
    # at a lower floor recall decides: class 2 recalls better at 1.5
    assert choose_scales(tmp_path, 0.99, "recall", 0.98) == {"0": 2.0, "1": 2.0, "2": 1.5,
                                                             "3": 2.0}
