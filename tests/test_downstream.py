"""Downstream evaluation pieces: subsets, reading pipeline output back, the reference classifier."""
import numpy as np
import pytest

from kepkreator.data import Dataset, load_sources
from kepkreator.downstream import (concat, markdown_table, per_class_subset, read_dataset,
                                   summarise, train_and_test, ReferenceTraining)
from kepkreator.errors import DataError
from pipeline.run import run
from tests.pipeline_fixtures import make_tiny_bundles, write_spec


def test_per_class_subset_is_exact_and_reproducible():
    from kepkreator.classsets import get_class_set
    labels = np.repeat(np.arange(10), 30)
    data = Dataset(np.arange(300 * 784, dtype=np.uint32).reshape(300, 28, 28).astype(np.uint8),
                   labels, get_class_set("digits"))
    a, b = per_class_subset(data, 7, seed=1), per_class_subset(data, 7, seed=1)
    assert (np.bincount(a.labels) == 7).all() and np.array_equal(a.images, b.images)
    assert not np.array_equal(per_class_subset(data, 7, seed=2).images, a.images)
    with pytest.raises(DataError, match="fewer than the 31"):
        per_class_subset(data, 31, seed=0)


def test_pipeline_output_trains_the_reference_classifier(tmp_path, mnist_dir):
    gen, val = make_tiny_bundles(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator=str(gen),
                      validator=str(val), counts={"per_class": 20}, min_confidence=0)
    out = run(["--spec", str(spec), "--out", str(tmp_path / "synthetic")]).out
    synthetic = read_dataset(out, "digits")
    assert len(synthetic) == 200 and (synthetic.class_counts() == 20).all()
    with pytest.raises(DataError, match="not class set 'letters'"):
        read_dataset(out, "letters")
    real = per_class_subset(load_sources([f"mnist:train@{mnist_dir}"], "digits"), 30, seed=0)
    test = per_class_subset(load_sources([f"mnist:test@{mnist_dir}"], "digits"), 20, seed=0)
    quick = ReferenceTraining(epochs=1, min_steps=40, batch_size=32)
    runs = {"c": [train_and_test(real, test, seed=s, schedule=quick) for s in (0, 1)],
            "d": [train_and_test(concat(real, synthetic), test, seed=0, schedule=quick)]}
    assert runs["c"][0]["accuracy"] > 0.3  # 300 real digits already teach something
    assert runs["d"][0]["train_samples"] == 500 and set(runs["d"][0]["per_class"]) == set("0123456789")
    summary = summarise(runs)
    assert summary["c"]["seeds"] == 2 and "| c |" in markdown_table(summary)
