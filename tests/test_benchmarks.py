"""benchmarks/gpu.py waits for a GPU; here it runs on the CPU at toy sizes, so that the first
GPU session spends its minutes measuring rather than debugging."""
import json

import keras

from benchmarks import gpu


def test_the_gpu_benchmark_runs_end_to_end_and_records_its_device(tmp_path):
    out = tmp_path / "gpu.json"
    try:
        gpu.main(["--quick", "--out", str(out)])
    finally:
        keras.config.set_dtype_policy("float32")
    result = json.loads(out.read_text())
    assert result["device"] and result["backend"] == keras.backend.backend()
    assert {(r["dtype"], r["batch"]) for r in result["throughput"]} == {
        (d, b) for d in ("float32", "bfloat16") for b in (256, 1024)}
    assert all(r["samples_per_s"] > 0 for r in result["throughput"])
    assert result["gan_epoch"]["seconds_per_mnist_epoch"] > 0
    assert result["target_met"] == (result["best"]["samples_per_s"] >= gpu.TARGET)
