"""make bench: the pipeline against the models' own speed, memory at two scales, and scale-out.

All figures come from ONE run on one machine and are reported as ratios beside the raw numbers:
  (a) limit     shipped generator + validator as compiled functions, samples/s
  (b) pipeline  `kepkreator generate` (FnApiRunner, both sinks), generated samples/s start->manifest
  (c) b / a
  (d) peak RSS of (b) at 50k and 500k accepted samples
  (e) scale-out: one TensorFlow thread per process, 2 local worker processes vs 1
  (f) GAN training speed
  (g) serve: a light request's p50/p95 alone and under 4 concurrent heaviest-allowed requests
  (h) Dask: 1 vs 2 local Dask workers (one thread each) on (e)'s job, and 2 Dask workers vs
      (e)'s 2 DirectRunner worker processes
  (i) backends: (b)'s job at 20k accepted on Keras-on-JAX (the lean runtime) vs TensorFlow
The result goes to benchmarks/results/<timestamp>.json and a table is printed.

    python -m benchmarks.run [--quick]     # --quick: 10x smaller runs, for trying the harness
    python -m benchmarks.run --only scaleout|serve|backends   # one part, printed
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def model_limit(seconds: float = 20.0, batch: int = 1024) -> dict:
    """(a): generator + validator compiled calls on full batches, no pipeline around them."""
    from kepkreator.models.bundle import load_bundle
    generator = load_bundle("default:digits", "generator")
    validator = load_bundle("default:digits", "validator")
    rng = np.random.default_rng(0)
    z = generator.sample_latent(rng, batch)
    labels = np.arange(batch) % generator.class_set.num_classes
    gen_inputs = generator.model_inputs(z, labels)
    for _ in range(3):  # warm-up: tracing and first-call allocation stay out of the numbers
        validator.predict(validator.preprocess(generator.postprocess(generator.predict(gen_inputs))))
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images = generator.postprocess(generator.predict(gen_inputs))
        validator.predict(validator.preprocess(images))
        n += batch
    return {"samples_per_s": n / (time.perf_counter() - started), "batch": batch}


def gan_epoch_seconds(data_dir: Path, steps: int = 60, batch: int = 128) -> dict | None:
    """(f): seconds per MNIST epoch (60,000 images) of the default GAN, from a steady-state
    second epoch of ``steps`` steps (the first pays for tracing and XLA compilation)."""
    if not (data_dir / "train-images-idx3-ubyte.gz").exists():
        return None
    import keras
    from kepkreator.training.gan import GANHParams, train_gan
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        train_gan(GANHParams(class_set="digits", data=[f"mnist:train@{data_dir}"],
                             out=str(Path(tmp) / "gan"), epochs=2, batch_size=batch,
                             max_train_samples=steps * batch, verbose=0), [EpochTimer()])
    per_step = times[-1] / steps
    return {"seconds_per_step": per_step, "batch": batch,
            "seconds_per_mnist_epoch": per_step * (60000 // batch)}


def pipeline_run(per_class: int, extra: list[str], env: dict | None = None) -> dict:
    """(b)/(d)/(e): one `kepkreator generate` in a child process; its peak RSS from the kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(json.dumps({"class_set": "digits", "generator": "default:digits",
                                    "validator": "default:digits",
                                    "counts": {"per_class": per_class}, "seed": 1,
                                    "min_confidence": 0.9, "shards": 8}))
        started = time.perf_counter()
        with open(Path(tmp) / "stderr.txt", "w+") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "generate", "--spec",
                                     str(spec), "--out", str(Path(tmp) / "out"), *extra],
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    env={**os.environ, **(env or {})})
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
            seconds = time.perf_counter() - started
            if os.waitstatus_to_exitcode(status) != 0:
                stderr.seek(0)
                last = (stderr.read().strip().splitlines() or ["?"])[-1]
                raise SystemExit(f"benchmark run failed: {last}")
        metrics = json.loads((Path(tmp) / "out" / "metrics.json").read_text())
    return {"per_class": per_class, "accepted": metrics["accepted"],
            "generated": metrics["generated"], "seconds": seconds,
            "generated_per_s": metrics["generated"] / seconds,
            "accepted_per_s": metrics["accepted"] / seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024, "args": extra}


def scale_out(per_class: int) -> dict:
    """(e) and (h): the same job on 1 and 2 local worker processes of the DirectRunner and of a
    local Dask cluster, one TensorFlow thread each."""
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    direct = lambda n: ["--direct_num_workers", str(n), "--direct_running_mode",
                        "multi_processing", "--intra_op_threads", "1"]
    dask = lambda n: ["--runner", "dask", "--dask_workers", str(n), "--intra_op_threads", "1"]
    out = {}
    for name, args in (("e_one_worker", direct(1)), ("e_two_workers", direct(2)),
                       ("h_dask_one", dask(1)), ("h_dask_two", dask(2))):
        print(f"  {name} ...", flush=True)
        out[name] = pipeline_run(per_class, args, one_thread)
    rate = lambda name: out[name]["generated_per_s"]
    out["e_speedup"] = rate("e_two_workers") / rate("e_one_worker")
    out["h_speedup"] = rate("h_dask_two") / rate("h_dask_one")
    out["h_dask_vs_direct"] = rate("h_dask_two") / rate("e_two_workers")
    return out


def backends(per_class: int) -> dict:
    """(i): the same job, every core, on each Keras backend; TensorFlow's rate over JAX's."""
    out = {name: pipeline_run(per_class, [], {"KERAS_BACKEND": name})
           for name in ("tensorflow", "jax")}
    out["i_tensorflow_over_jax"] = (out["tensorflow"]["generated_per_s"]
                                    / out["jax"]["generated_per_s"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["scaleout", "serve", "backends"])
    args = parser.parse_args(argv)
    from kepkreator.quiet import quiet_tensorflow_import
    quiet_tensorflow_import()
    scale = 10 if args.quick else 1
    if args.only:
        from benchmarks.serve import serve_fairness
        part = (scale_out(10_000 // scale) if args.only == "scaleout"
                else backends(2_000 // scale) if args.only == "backends"
                else serve_fairness(ROOT, light_requests=30 // scale))
        print(json.dumps(part, indent=2))
        return
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "command": "make bench" + (" (--quick)" if args.quick else "")}
    print("(a) model limit ...", flush=True)
    result["a_limit"] = model_limit(seconds=20 / scale)
    print("(d) 50k samples ...", flush=True)
    result["d_rss_50k"] = pipeline_run(5_000 // scale, [])
    print("(b) 200k samples ...", flush=True)
    result["b_pipeline"] = pipeline_run(20_000 // scale, [])
    print("(d) 500k samples ...", flush=True)
    result["d_rss_500k"] = pipeline_run(50_000 // scale, [])
    result["c_ratio"] = result["b_pipeline"]["generated_per_s"] / result["a_limit"]["samples_per_s"]
    print("(e), (h) scale-out, 1 thread per process ...", flush=True)
    result.update(scale_out(10_000 // scale))
    print("(i) Keras backends ...", flush=True)
    result["i_backends"] = backends(2_000 // scale)
    print("(f) GAN training speed ...", flush=True)
    result["f_gan_training"] = gan_epoch_seconds(ROOT.parent / "shared" / "data" / "mnist")
    print("(g) serve under load ...", flush=True)
    from benchmarks.serve import serve_fairness
    result["g_serve"] = serve_fairness(ROOT, light_requests=30 // scale)
    rss50, rss500 = result["d_rss_50k"]["peak_rss_mb"], result["d_rss_500k"]["peak_rss_mb"]
    result["d_rss_ratio"] = (rss500 / rss50) if rss50 and rss500 else None

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    b = result["b_pipeline"]
    rows = [("(a) model limit, samples/s", f"{result['a_limit']['samples_per_s']:,.0f}", ""),
            ("(b) pipeline generated/s", f"{b['generated_per_s']:,.0f}",
             f"accepted/s {b['accepted_per_s']:,.0f}, {b['seconds']:.0f} s"),
            ("(c) b / a", f"{result['c_ratio']:.2f}", "target >= 0.80"),
            ("(d) peak RSS 50k / 500k, MB", f"{rss50 or 0:,.0f} / {rss500 or 0:,.0f}",
             f"ratio {result['d_rss_ratio'] or float('nan'):.3f}, target <= 1.10"),
            ("(e) 2 workers vs 1 (1 thread each)", f"{result['e_speedup']:.2f}x",
             "target >= 1.7x"),
            ("(h) Dask: 2 workers vs 1", f"{result['h_speedup']:.2f}x", "target >= 1.7x"),
            ("(h) Dask 2 workers / DirectRunner 2", f"{result['h_dask_vs_direct']:.2f}", ""),
            ("(i) TensorFlow / JAX, generated/s",
             f"{result['i_backends']['i_tensorflow_over_jax']:.2f}",
             f"{result['i_backends']['tensorflow']['generated_per_s']:,.0f} vs "
             f"{result['i_backends']['jax']['generated_per_s']:,.0f}")]
    if result["f_gan_training"]:
        rows.append(("(f) default GAN, s per MNIST epoch",
                     f"{result['f_gan_training']['seconds_per_mnist_epoch']:,.0f}",
                     f"batch {result['f_gan_training']['batch']}, this CPU"))
    g = result["g_serve"]
    rows.append(("(g) serve: light request p50 / p95, s",
                 f"{g['light_under_4_heavy']['p50_s']:.3f} / {g['light_under_4_heavy']['p95_s']:.3f}",
                 f"alone {g['light_alone']['p50_s']:.3f} / {g['light_alone']['p95_s']:.3f}; "
                 f"under 4 heavy (alone {g['heavy_alone_s']:.1f} s each)"))
    for name, value, note in rows:
        print(f"{name:<38} {value:>14}   {note}")
    print(f"result: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
