"""The named composite PTransforms, in data-flow order:

ExpandSpecs -> GenerationRound x max_rounds (Generate -> Score -> Filter, shortfalls topped up)
-> ComputeClassMetrics, and the accepted batches on to the sinks.

Elements are whole work units carrying numpy arrays, never single images, so per-element costs
(pickling, bookkeeping) are paid once per thousand samples.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

from kepkreator.faults import kill_point
from kepkreator.metrics import ClassStats, class_report
from pipeline.handlers import ScoredBatch
from pipeline.specs import JobSpec, expand, top_up

SAMPLES_PER_CLASS_IN_GRID = 10


@dataclass
class AcceptedBatch:
    unit_id: str
    round: int
    candidate_index: np.ndarray  # (k,) position among the unit's candidates, for sample ids
    images: np.ndarray           # (k, 28, 28) uint8 upright
    labels: np.ndarray           # (k,) int64 class index
    confidence: np.ndarray       # (k,) float32 validator probability of the label
    split: str = "train"

    @property
    def order_key(self) -> tuple:
        """Unit number first (so several spec files interleave), then a unit's rounds in order:
        its top-up rows follow its own first round instead of piling up at the end."""
        number = self.unit_id.rsplit("-u", 1)[-1]
        return (number, self.unit_id, self.round)

    def sample_ids(self, positions=None) -> list[str]:
        index = self.candidate_index if positions is None else self.candidate_index[positions]
        return [f"{self.unit_id}-r{self.round}-{i:07d}" for i in index]


@dataclass
class UnitReport:
    unit_id: str
    round: int
    quota: tuple[int, ...]
    accepted_per_class: np.ndarray
    passed_per_class: np.ndarray  # passed the filter, before quotas cut the surplus
    generated: ClassStats   # every candidate, keyed by the requested class
    accepted: ClassStats    # the kept samples, keyed by their dataset label


def select_accepted(scored: ScoredBatch, quota, policy: str, min_confidence):
    """Indices of kept candidates (in candidate order), their labels and confidences, and how
    many candidates of each class passed the filter before the quota cut the surplus.

    conditioned: the validator must agree with the requested class and be confident;
    relabel: any confident sample is kept under the validator's class. Each class keeps at most
    its quota, earliest candidates first, so the choice never depends on batch boundaries.
    ``min_confidence``: one threshold, or one per class (of the label a sample would get);
    0 turns the filter off (conditioned keeps the requested label as it is).
    """
    probs = scored.probabilities
    predicted = probs.argmax(1)
    # in the probabilities' dtype, as a plain float threshold was compared before
    threshold = np.broadcast_to(np.asarray(min_confidence, probs.dtype), (len(quota),))
    if policy == "relabel":
        labels = predicted
        ok = probs.max(1) >= threshold[labels]
    else:
        labels = scored.requested
        ok = (threshold[labels] <= 0) | (
            (predicted == labels) & (probs.max(1) >= threshold[labels]))
    chosen = []
    for c, q in enumerate(quota):
        if q:
            chosen.append(np.flatnonzero(ok & (labels == c))[:q])
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    passed = np.bincount(labels[ok], minlength=len(quota))[:len(quota)]
    return index, labels[index], probs[index, labels[index]].astype(np.float32), passed


class ExpandSpecs(beam.PTransform):
    """The job's round-0 work units, fanned out so every worker can take some."""

    def __init__(self, job: JobSpec):
        super().__init__()
        self.job = job

    def expand(self, pbegin):
        return (pbegin | "Units" >> beam.Create(expand(self.job))
                | "FanOut" >> beam.Reshuffle())


class _Inference(beam.PTransform):
    """RunInference with one of our handlers, under a step name of its own."""
    step = ""

    def __init__(self, handler):
        super().__init__()
        self.handler = handler

    def expand(self, pcoll):
        return pcoll | self.step >> RunInference(self.handler)


class Generate(_Inference):
    """WorkUnit -> GeneratedBatch, on the generator bundle."""
    step = "RunGenerator"


class Score(_Inference):
    """GeneratedBatch -> ScoredBatch, on the validator bundle."""
    step = "RunValidator"


class _FilterDoFn(beam.DoFn):
    TOP_UP, REPORT = "top_up", "report"

    def __init__(self, job: JobSpec, progress_dir: str | None):
        self.job = job
        self.thresholds = job.thresholds()
        self.progress_dir = progress_dir
        self.accepted_counter = beam.metrics.Metrics.counter("kepkreator", "accepted")
        self.generated_counter = beam.metrics.Metrics.counter("kepkreator", "generated")

    def process(self, scored: ScoredBatch):
        unit, job = scored.unit, self.job
        index, labels, confidence, passed = select_accepted(scored, unit.quota, job.label_policy,
                                                            self.thresholds)
        num_classes = len(unit.quota)
        per_class = np.bincount(labels, minlength=num_classes)
        shortfall = [int(q - a) for q, a in zip(unit.quota, per_class)]
        self.generated_counter.inc(len(scored.images))
        self.accepted_counter.inc(len(index))
        if len(index):
            yield AcceptedBatch(unit.unit_id, unit.round, index.astype(np.int64),
                                scored.images[index], labels.astype(np.int64), confidence,
                                unit.split)
        probs = scored.probabilities
        yield beam.pvalue.TaggedOutput(self.REPORT, UnitReport(
            unit.unit_id, unit.round, unit.quota, per_class, passed,
            ClassStats.from_probabilities(probs, scored.requested, num_classes),
            ClassStats.from_probabilities(probs[index], labels, num_classes)))
        follow_up = top_up(job, unit, shortfall, per_class)
        if follow_up is not None:
            yield beam.pvalue.TaggedOutput(self.TOP_UP, follow_up)
        if self.progress_dir:
            _append_progress(self.progress_dir, per_class, len(scored.images))
        kill_point("round")


def _append_progress(directory: str, per_class: np.ndarray, generated: int) -> None:
    """One line per unit in a per-process file; the CLI reads these for its live display."""
    with open(os.path.join(directory, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps({"accepted": per_class.tolist(), "generated": generated}) + "\n")


class Filter(beam.PTransform):
    """Keep confident, correctly labelled samples up to each unit's quota; emit top-up units."""

    def __init__(self, job: JobSpec, progress_dir: str | None = None):
        super().__init__()
        self.job = job
        self.progress_dir = progress_dir

    def expand(self, scored):
        return scored | "SelectAccepted" >> beam.ParDo(
            _FilterDoFn(self.job, self.progress_dir)).with_outputs(
            _FilterDoFn.TOP_UP, _FilterDoFn.REPORT, main="accepted")


class GenerationRound(beam.PTransform):
    """Generate -> Score -> Filter for one round of work units."""

    def __init__(self, job, generator_handler, validator_handler, progress_dir=None,
                 accelerator_hint: str | None = None):
        super().__init__()
        self.job = job
        self.generator_handler, self.validator_handler = generator_handler, validator_handler
        self.progress_dir = progress_dir
        self.accelerator_hint = accelerator_hint

    def expand(self, units):
        generate, score = Generate(self.generator_handler), Score(self.validator_handler)
        if self.accelerator_hint:
            generate = generate.with_resource_hints(accelerator=self.accelerator_hint)
            score = score.with_resource_hints(accelerator=self.accelerator_hint)
        return (units | "Generate" >> generate | "Score" >> score
                | "Filter" >> Filter(self.job, self.progress_dir))


class ClassMetricsFn(beam.CombineFn):
    """Per-class generated / accepted / acceptance / confidence and IS, BCIS, WCIS, in one pass."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def create_accumulator(self):
        zeros = lambda: np.zeros(self.num_classes, np.int64)
        return (ClassStats.zeros(self.num_classes), ClassStats.zeros(self.num_classes),
                zeros(), zeros(), zeros(), 0)

    def add_input(self, acc, report: UnitReport):
        generated, accepted, quota, got, passed, units = acc
        if report.round == 0:
            quota = quota + np.asarray(report.quota)
            units += 1
        return (generated + report.generated, accepted + report.accepted, quota,
                got + report.accepted_per_class, passed + report.passed_per_class, units)

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        out = accumulators[0]
        for other in accumulators[1:]:
            out = tuple(a + b for a, b in zip(out, other))
        return out

    def extract_output(self, acc):
        return acc


def class_metrics(acc, labels: list[str]) -> dict:
    """The metrics.json payload from the combiner's accumulator (plain Python, no Beam)."""
    generated, accepted, requested, got, passed, units = acc
    per_class = {}
    for c, label in enumerate(labels):
        n_gen = int(generated.count[c])
        if not requested[c] and not n_gen and not got[c]:
            continue
        per_class[label] = {
            "requested": int(requested[c]), "accepted": int(got[c]),
            "shortfall": int(max(requested[c] - got[c], 0)), "generated": n_gen,
            "passed_filter": int(passed[c]),
            "acceptance_rate": float(passed[c] / n_gen) if n_gen else None,
            "mean_confidence_accepted": (float(accepted.sum_conf[c] / accepted.count[c])
                                         if accepted.count[c] else None),
            "agreement_generated": float(generated.hits[c] / n_gen) if n_gen else None,
        }
    gen_report, acc_report = class_report(generated, labels), class_report(accepted, labels)
    for report in (gen_report, acc_report):
        report.pop("per_class")
    return {"work_units": int(units), "requested": int(requested.sum()),
            "accepted": int(got.sum()), "generated": int(generated.count.sum()),
            "passed_filter": int(passed.sum()),
            "shortfall": int(np.maximum(requested - got, 0).sum()),
            "generated_samples": gen_report, "accepted_samples": acc_report,
            "per_class": per_class}


class ComputeClassMetrics(beam.PTransform):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def expand(self, reports):
        return reports | "CombineClassStats" >> beam.CombineGlobally(
            ClassMetricsFn(self.num_classes))


def grid_candidates(batch: AcceptedBatch) -> dict:
    """{class: [(sample_id, image), ...]}: the first few samples of each class in a batch, all
    the sample grid can ever use from it."""
    part = {}
    for label in np.unique(batch.labels):
        first = np.flatnonzero(batch.labels == label)[:SAMPLES_PER_CLASS_IN_GRID]
        part[int(label)] = list(zip(batch.sample_ids(first), batch.images[first]))
    return part


class _GridFn(beam.CombineFn):
    """The first few accepted samples of every class (by sample id), for samples.png; inputs
    and output are partial grids, so the combine can run per round and again over the rounds."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, part: dict):
        return self.merge_accumulators([acc, part])

    def merge_accumulators(self, accumulators):
        out = {}
        for acc in accumulators:
            for label, row in acc.items():
                merged = sorted(out.get(label, []) + row, key=lambda item: item[0])
                out[label] = merged[:SAMPLES_PER_CLASS_IN_GRID]
        return out

    def extract_output(self, acc):
        return acc


class GridPart(beam.PTransform):
    """Accepted batches -> one partial grid, combined inside the round's own stage.

    Every batch holds every class, so each offers C x SAMPLES_PER_CLASS_IN_GRID candidates; sent
    on as they are, a Flatten across rounds (which the FnApiRunner cannot fuse) held them all in
    memory, and the peak RSS grew with the job (bench (d): x 1.32 from 50k to 500k samples)."""

    def expand(self, accepted):
        return (accepted | "GridCandidates" >> beam.Map(grid_candidates)
                | "FirstSamplesPerClass" >> beam.CombineGlobally(_GridFn()).without_defaults())


class SampleGrid(beam.PTransform):
    """Partial grids (see ``GridPart``) -> {class: [(sample_id, image), ...]}."""

    def expand(self, parts):
        return parts | "FirstSamplesPerClass" >> beam.CombineGlobally(_GridFn())


def run_rounds(pbegin, job: JobSpec, generator_handler, validator_handler, consume_accepted,
               progress_dir=None, accelerator_hint=None):
    """Unrolled top-up rounds: a round's shortfall units feed the next round.

    ``consume_accepted(accepted, round)`` is applied to each round's accepted batches right where
    they are made and must return small outputs: the FnApiRunner cannot fuse a Flatten whose
    inputs come from different stages, so flattening the batches themselves would hold every
    accepted image in memory at once. Returns the flattened outputs of ``consume_accepted``
    (a tuple, one PCollection per position) and the flattened unit reports.
    """
    units = pbegin | "ExpandSpecs" >> ExpandSpecs(job)
    consumed, reports = [], []
    for r in range(job.max_rounds):
        out = units | f"Round{r}" >> GenerationRound(job, generator_handler, validator_handler,
                                                     progress_dir, accelerator_hint)
        consumed.append(consume_accepted(out.accepted, r))
        reports.append(out[_FilterDoFn.REPORT])
        units = out[_FilterDoFn.TOP_UP]
    flattened = tuple(parts | f"AllRounds{i}" >> beam.Flatten()
                      for i, parts in enumerate(zip(*consumed)))
    return flattened, reports | "AllReports" >> beam.Flatten()
