"""RunInference ModelHandlers for KepKreator bundles.

Beam's RunInference gives each worker process one loaded model, batches elements with
BatchElements, and reports inference metrics; these handlers only say how to load a bundle and
how to run a batch of work units through it. An element is a whole work unit (hundreds to
thousands of samples as numpy arrays), and each unit is one model call of its own size, so a
sample's pixels never depend on which other units happened to share its batch: the output is
byte-identical however the runner bundles, retries or parallelises the work.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from pipeline.units import WorkUnit, candidate_labels


class _QuietMemoryProbe(logging.Filter):
    """Beam 2.77's RunInference loses the ``resource`` module when torch is absent (the import
    shares a try-block with its ModelManager) and then warns on every batch; the warning carries
    no information for us, so it is dropped."""

    def filter(self, record):
        return "Resource module is not available" not in record.getMessage()


logging.getLogger().addFilter(_QuietMemoryProbe())


@dataclass
class GeneratedBatch:
    unit: WorkUnit
    requested: np.ndarray  # (n,) requested class index per candidate
    images: np.ndarray     # (n, 28, 28) uint8, upright


@dataclass
class ScoredBatch:
    unit: WorkUnit
    requested: np.ndarray
    images: np.ndarray
    probabilities: np.ndarray  # (n, C) validator output
    # (n,) bool: inside the real manifold by the validator's reference bank (realism filter)
    realistic: np.ndarray | None = None
    second_probabilities: np.ndarray | None = None  # (n, C) the second validator's
    judge_probabilities: np.ndarray | None = None  # (n, C) the judge's, which only measures
    judge_features: np.ndarray | None = None       # (n, D) for density and coverage


def unit_rng(unit: WorkUnit) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(unit.seed)))


def _configure_threads(intra_op_threads: int) -> None:
    if not intra_op_threads:
        return
    from kepkreator.backend import keras_backend
    if keras_backend() == "jax":
        # XLA reads its flags once, when JAX first runs something in this process.
        import os
        import sys
        if "jax" in sys.modules:
            logging.warning("intra_op_threads=%d not applied: JAX was already imported in this "
                            "process (set XLA_FLAGS instead)", intra_op_threads)
            return
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false"
                                   f" intra_op_parallelism_threads={intra_op_threads}").strip()
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process
        logging.warning("intra_op_threads=%d not applied: TensorFlow was already initialised "
                        "in this process (set TF_NUM_INTRAOP_THREADS instead)",
                        intra_op_threads)


_LOADED: dict = {}
_CACHE_LOCK = threading.Lock()


class _BundleHandler(ModelHandler):
    kind = ""

    def __init__(self, bundle_ref: str, max_units_per_batch: int = 8, intra_op_threads: int = 0):
        """``max_units_per_batch`` 0: no batching by RunInference; its input is then one-unit
        lists (``_Inference`` makes them)."""
        super().__init__(min_batch_size=1, max_batch_size=max(max_units_per_batch, 1))
        self.bundle_ref = bundle_ref
        self.intra_op_threads = intra_op_threads
        self.batching = max_units_per_batch > 0

    def should_skip_batching(self) -> bool:
        return not self.batching

    def load_model(self):
        """One loaded bundle per process, shared by every round's RunInference."""
        _configure_threads(self.intra_op_threads)
        key = (self.bundle_ref, self.kind)
        with _CACHE_LOCK:
            if key not in _LOADED:
                from kepkreator.models.bundle import load_bundle
                _LOADED[key] = load_bundle(self.bundle_ref, self.kind)
            return _LOADED[key]

    def get_metrics_namespace(self) -> str:
        return f"kepkreator_{self.kind}"


class GeneratorHandler(_BundleHandler):
    """WorkUnit -> GeneratedBatch: latent draws from the unit's own seed, one model call per unit."""
    kind = "generator"

    def __init__(self, bundle_ref: str, max_units_per_batch: int = 8, intra_op_threads: int = 0,
                 latent_scale: float = 1.0):
        super().__init__(bundle_ref, max_units_per_batch, intra_op_threads)
        self.latent_scale = latent_scale

    def run_inference(self, batch: Sequence[WorkUnit], model,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[GeneratedBatch]:
        for unit in batch:
            labels = candidate_labels(unit)
            z = model.sample_latent(unit_rng(unit), unit.candidates, self.latent_scale)
            yield GeneratedBatch(unit, labels, model.generate(z, labels))

    def get_num_bytes(self, batch: Sequence[WorkUnit]) -> int:
        return sum(u.candidates for u in batch) * 784


class ValidatorHandler(_BundleHandler):
    """GeneratedBatch -> ScoredBatch: class probabilities for every candidate, and with
    ``realism`` (a radius scale) whether it falls inside the real manifold."""
    kind = "validator"

    def __init__(self, bundle_ref: str, max_units_per_batch: int = 8, intra_op_threads: int = 0,
                 realism: float | None = None, label_policy: str = "conditioned"):
        super().__init__(bundle_ref, max_units_per_batch, intra_op_threads)
        self.realism, self.label_policy = realism, label_policy

    def run_inference(self, batch: Sequence[GeneratedBatch], model,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[ScoredBatch]:
        for generated in batch:
            probs, features = model.scores(generated.images)
            realistic = None
            if self.realism is not None:  # against the class the sample would be labelled
                labels = probs.argmax(1) if self.label_policy == "relabel" else generated.requested
                realistic = model.reference_bank().inside(features, labels, self.realism)
            yield ScoredBatch(generated.unit, generated.requested, generated.images, probs,
                              realistic)


class SecondValidatorHandler(_BundleHandler):
    """ScoredBatch -> the same with a second validator's probabilities, which the filter asks
    to be as sure of the label as the first."""
    kind = "second_validator"

    def run_inference(self, batch: Sequence[ScoredBatch], model,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[ScoredBatch]:
        for scored in batch:
            yield replace(scored, second_probabilities=model.probabilities(scored.images))

    def get_num_bytes(self, batch: Sequence[ScoredBatch]) -> int:
        return sum(s.images.nbytes for s in batch)


class JudgeHandler(_BundleHandler):
    """ScoredBatch -> the same with the judge's probabilities and features: an independent
    classifier's view of every candidate, for the reports only."""
    kind = "judge"

    def run_inference(self, batch: Sequence[ScoredBatch], model,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[ScoredBatch]:
        for scored in batch:
            probabilities, features = model.scores(scored.images)
            yield replace(scored, judge_probabilities=probabilities, judge_features=features)

    def get_num_bytes(self, batch: Sequence[GeneratedBatch]) -> int:
        return sum(g.images.nbytes for g in batch)
