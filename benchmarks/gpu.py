"""GPU figures: the shipped generator + validator (samples/s, float32 and bfloat16, batch 1k to
64k) and one epoch of GAN training, on whatever accelerator Keras sees, with its name recorded.

Self-contained on purpose: it loads the shipped ``.keras`` files with Keras alone, so it runs
where TensorFlow is absent (Keras 3 on JAX):

    KERAS_BACKEND=jax python -m benchmarks.gpu --out gpu.json [--quick]

On a CPU it runs too (the tests do, at toy sizes); its figures are then the CPU's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "kepkreator" / "assets"
TARGET = 250_000  # generator + validator samples/s on one H100/H200-class GPU (issue 39)


def device_name() -> str:
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                         for g in gpus) or f"cpu ({platform.processor() or platform.machine()})"
    return backend


def _models(dtype: str):
    import keras

    from kepkreator.models.bundle import _keras_custom_objects
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    load = lambda kind: keras.models.load_model(ASSETS / "digits" / kind / "model.keras",
                                                compile=False,
                                                custom_objects=_keras_custom_objects())
    return load("generator"), load("validator")


def throughput(batch: int, dtype: str, seconds: float) -> dict:
    """Generator then validator on ``batch`` samples per step, one compiled function; samples/s
    over ``seconds`` after two warm-up steps (compilation stays out of the figure)."""
    import keras
    generator, validator = _models(dtype)
    latent = generator.inputs[0].shape[-1]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch, latent)).astype("float32")
    labels = (np.arange(batch) % 10).reshape(-1, 1).astype("int32")

    def step(z, labels):
        images = generator([z, labels], training=False)
        return validator(images, training=False)

    if keras.backend.backend() == "jax":
        import jax
        fn = jax.jit(step)
        block = lambda out: out.block_until_ready()
    else:
        import tensorflow as tf
        fn = tf.function(step, jit_compile=False)
        block = lambda out: out.numpy()
    for _ in range(2):
        block(fn(z, labels))
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        block(fn(z, labels))
        n += batch
    elapsed = time.perf_counter() - started
    return {"batch": batch, "dtype": dtype, "samples_per_s": n / elapsed, "steps": n // batch}


def gan_epoch(steps: int, batch: int) -> dict:
    """Seconds per MNIST epoch (60,000 images) of the default GAN's training step, from random
    images (the step's cost does not depend on the pixels)."""
    import keras

    from kepkreator.models.networks import build_discriminator, build_generator
    keras.config.set_dtype_policy("float32")
    generator, discriminator = build_generator(10, "default"), build_discriminator(10, "default")
    g_opt, d_opt = keras.optimizers.Adam(2e-4, 0.5), keras.optimizers.Adam(2e-4, 0.5)
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (batch, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, (batch, 1)).astype("int32")
    z = rng.standard_normal((batch, 64)).astype("float32")
    gan_in = keras.Input((64,)), keras.Input((1,), dtype="int32")
    # the auxiliary-classifier GAN's two losses: real/fake and the class
    losses = [keras.losses.BinaryCrossentropy(from_logits=True),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
    gan = keras.Model(list(gan_in), discriminator([generator(list(gan_in)), gan_in[1]]))
    ones, zeros = np.ones((batch, 1), "float32"), np.zeros((batch, 1), "float32")
    discriminator.compile(d_opt, loss=losses)
    discriminator.train_on_batch([real, labels], [ones, labels])  # its step, traced trainable
    discriminator.trainable = False  # the generator's step updates the generator alone
    gan.compile(g_opt, loss=losses)

    def one_step():
        fake = generator.predict_on_batch([z, labels])
        discriminator.train_on_batch([real, labels], [ones, labels])
        discriminator.train_on_batch([fake, labels], [zeros, labels])
        gan.train_on_batch([z, labels], [ones, labels])

    for _ in range(3):
        one_step()
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    per_step = (time.perf_counter() - started) / steps
    return {"batch": batch, "seconds_per_step": per_step,
            "seconds_per_mnist_epoch": per_step * (60_000 // batch)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="")
    parser.add_argument("--quick", action="store_true", help="toy sizes: to try the script")
    args = parser.parse_args(argv)
    import keras
    batches = (256, 1024) if args.quick else (1024, 4096, 16384, 65536)
    seconds = 0.5 if args.quick else 5.0
    result = {"device": device_name(), "backend": keras.backend.backend(),
              "keras": keras.__version__, "target_samples_per_s": TARGET, "throughput": []}
    for dtype in ("float32", "bfloat16"):
        for batch in batches:
            row = throughput(batch, dtype, seconds)
            result["throughput"].append(row)
            print(f"{dtype:>9} batch {batch:>6}: {row['samples_per_s']:>12,.0f} samples/s",
                  flush=True)
    best = max(result["throughput"], key=lambda r: r["samples_per_s"])
    result["best"] = best
    result["target_met"] = best["samples_per_s"] >= TARGET
    result["gan_epoch"] = gan_epoch(steps=3 if args.quick else 50, batch=128)
    print(f"best {best['samples_per_s']:,.0f} samples/s ({best['dtype']}, batch {best['batch']});"
          f" target {TARGET:,}: {'met' if result['target_met'] else 'missed'}; GAN epoch "
          f"{result['gan_epoch']['seconds_per_mnist_epoch']:.1f} s on {result['device']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
