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
from kepkreator.metrics import ClassStats
from kepkreator.thresholds import sure_of
from pipeline.handlers import ScoredBatch
from pipeline.job import JobSpec
from pipeline.metrics import UnitReport
from pipeline.units import expand, top_up

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
    judge_features: np.ndarray | None = None  # (k, D), for density and coverage

    @property
    def order_key(self) -> tuple:
        """Unit number first (so several spec files interleave), then a unit's rounds in order:
        its top-up rows follow its own first round instead of piling up at the end."""
        number = self.unit_id.rsplit("-u", 1)[-1]
        return (number, self.unit_id, self.round)

    def sample_ids(self, positions=None) -> list[str]:
        index = self.candidate_index if positions is None else self.candidate_index[positions]
        return [f"{self.unit_id}-r{self.round}-{i:07d}" for i in index]


def select_accepted(scored: ScoredBatch, quota, policy: str, min_confidence):
    """Indices of kept candidates (in candidate order), their labels and confidences, how
    many candidates of each class passed the filters before the quota cut the surplus, and how
    many passed the confidence test, the realism test and the second validator's test each.

    conditioned: the validator must agree with the requested class and be confident;
    relabel: any confident sample is kept under the validator's class. Each class keeps at most
    its quota, earliest candidates first, so the choice never depends on batch boundaries.
    ``min_confidence``: one threshold, or one per class (of the label a sample would get);
    0 turns the filter off (conditioned keeps the requested label as it is). The realism test
    is ``scored.realistic`` (None: off). The second validator (``scored.second_probabilities``,
    None: off) must pick the same label at the same threshold.
    """
    probs = scored.probabilities
    # in the probabilities' dtype, as a plain float threshold was compared before
    threshold = np.broadcast_to(np.asarray(min_confidence, probs.dtype), (len(quota),))
    labels = probs.argmax(1) if policy == "relabel" else scored.requested
    confident = sure_of(probs, labels, threshold[labels])
    realistic = np.ones(len(labels), bool) if scored.realistic is None else scored.realistic
    seconded = np.ones(len(labels), bool)
    if scored.second_probabilities is not None:
        seconded = sure_of(scored.second_probabilities, labels, threshold[labels])
    ok = confident & realistic & seconded
    count = lambda mask: np.bincount(labels[mask], minlength=len(quota))[:len(quota)]
    chosen = []
    for c, q in enumerate(quota):
        if q:
            chosen.append(np.flatnonzero(ok & (labels == c))[:q])
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return (index, labels[index], probs[index, labels[index]].astype(np.float32), count(ok),
            count(confident), count(realistic), count(seconded))


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
        if self.handler.should_skip_batching():  # RunInference then takes ready-made batches
            pcoll = pcoll | f"{self.step}_OneUnitBatches" >> beam.Map(lambda unit: [unit])
        return pcoll | self.step >> RunInference(self.handler)


class Generate(_Inference):
    """WorkUnit -> GeneratedBatch, on the generator bundle."""
    step = "RunGenerator"


class Score(_Inference):
    """GeneratedBatch -> ScoredBatch, on the validator bundle."""
    step = "RunValidator"


class SecondScore(_Inference):
    """ScoredBatch -> the same, with the second validator's probabilities (the filter's second
    opinion)."""
    step = "RunSecondValidator"


class Judge(_Inference):
    """ScoredBatch -> the same, with the judge's view of every candidate (reports only)."""
    step = "RunJudge"


@dataclass
class FilterOutcome:
    """What filtering one scored unit gives: its kept samples (None: none kept), its report,
    and the top-up unit that asks for its shortfall (None: no shortfall)."""
    accepted: AcceptedBatch | None
    report: UnitReport
    top_up: object | None


class _FilterDoFn(beam.DoFn):
    def __init__(self, job: JobSpec, progress_dir: str | None):
        self.job = job
        self.thresholds = job.thresholds()
        self.progress_dir = progress_dir
        self.accepted_counter = beam.metrics.Metrics.counter("kepkreator", "accepted")
        self.generated_counter = beam.metrics.Metrics.counter("kepkreator", "generated")

    def process(self, scored: ScoredBatch):
        unit, job = scored.unit, self.job
        index, labels, confidence, passed, confident, realistic, seconded = select_accepted(
            scored, unit.quota, job.label_policy, self.thresholds)
        num_classes = len(unit.quota)
        per_class = np.bincount(labels, minlength=num_classes)
        shortfall = [int(q - a) for q, a in zip(unit.quota, per_class)]
        self.generated_counter.inc(len(scored.images))
        self.accepted_counter.inc(len(index))
        judged = scored.judge_probabilities
        accepted = None
        if len(index):
            accepted = AcceptedBatch(unit.unit_id, unit.round, index.astype(np.int64),
                                     scored.images[index], labels.astype(np.int64), confidence,
                                     unit.split,
                                     None if judged is None else scored.judge_features[index])
        probs = scored.probabilities
        report = UnitReport(
            unit.unit_id, unit.round, unit.quota, per_class, passed,
            ClassStats.from_probabilities(probs, scored.requested, num_classes),
            ClassStats.from_probabilities(probs[index], labels, num_classes),
            confident, realistic, seconded,
            None if judged is None else ClassStats.from_probabilities(
                judged, scored.requested, num_classes),
            None if judged is None else ClassStats.from_probabilities(
                judged[index], labels, num_classes))
        if self.progress_dir:
            _append_progress(self.progress_dir, per_class, len(scored.images))
        kill_point("round")
        yield FilterOutcome(accepted, report, top_up(job, unit, shortfall, per_class))


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
        """{"accepted": batches, "report": unit reports, "top_up": next round's units}.

        One output, split by three FlatMaps (fused into the same stage), rather than a
        multi-output ParDo: Beam's DaskRunner hands every consumer of a multi-output ParDo all
        of its outputs, tags ignored."""
        outcomes = scored | "SelectAccepted" >> beam.ParDo(_FilterDoFn(self.job,
                                                                       self.progress_dir))
        return {name: outcomes | f"Take_{name}" >> beam.FlatMap(_take, name)
                for name in ("accepted", "report", "top_up")}


def _take(outcome: FilterOutcome, name: str):
    part = getattr(outcome, name)
    return [] if part is None else [part]


class GenerationRound(beam.PTransform):
    """Generate -> Score -> (SecondScore) -> (Judge) -> Filter for one round of work units."""

    def __init__(self, job, handlers: dict, progress_dir=None,
                 accelerator_hint: str | None = None):
        super().__init__()
        self.job, self.handlers = job, handlers
        self.progress_dir = progress_dir
        self.accelerator_hint = accelerator_hint

    def expand(self, units):
        steps = [("Generate", Generate(self.handlers["generator"])),
                 ("Score", Score(self.handlers["validator"]))]
        if self.handlers.get("second_validator"):
            steps.append(("SecondScore", SecondScore(self.handlers["second_validator"])))
        if self.handlers.get("judge"):
            steps.append(("Judge", Judge(self.handlers["judge"])))
        pcoll = units
        for name, step in steps:
            if self.accelerator_hint:
                step = step.with_resource_hints(accelerator=self.accelerator_hint)
            pcoll = pcoll | name >> step
        return pcoll | "Filter" >> Filter(self.job, self.progress_dir)


def first_samples(batch: AcceptedBatch, limit: int, payload: str) -> dict:
    """{class: [(sample_id, item), ...]}: the first ``limit`` accepted samples of each class in
    a batch (images for the grid, judge features for density and coverage), all a per-class
    sample by sample id can ever use from it."""
    items = getattr(batch, payload)
    part = {}
    for label in np.unique(batch.labels):
        first = np.flatnonzero(batch.labels == label)[:limit]
        part[int(label)] = list(zip(batch.sample_ids(first), items[first]))
    return part


class _FirstPerClassFn(beam.CombineFn):
    """The first ``limit`` accepted samples of every class (by sample id); inputs and output
    are partial samples, so the combine can run per round and again over the rounds."""

    def __init__(self, limit: int):
        self.limit = limit

    def create_accumulator(self):
        return {}

    def add_input(self, acc, part: dict):
        return self.merge_accumulators([acc, part])

    def merge_accumulators(self, accumulators):
        out = {}
        for acc in accumulators:
            for label, row in acc.items():
                merged = sorted(out.get(label, []) + row, key=lambda item: item[0])
                out[label] = merged[:self.limit]
        return out

    def extract_output(self, acc):
        return acc


class FirstPerClassPart(beam.PTransform):
    """Accepted batches -> one partial per-class sample, combined inside the round's own stage.

    Every batch holds every class, so each offers C x ``limit`` candidates; sent on as they
    are, a Flatten across rounds (which the FnApiRunner cannot fuse) would hold them all in
    memory, and the peak RSS would grow with the job."""

    def __init__(self, limit: int, payload: str):
        super().__init__()
        self.limit, self.payload = limit, payload

    def expand(self, accepted):
        limit, payload = self.limit, self.payload
        return (accepted
                | "FirstOfBatch" >> beam.Map(first_samples, limit, payload)
                | "FirstPerClass" >> beam.CombineGlobally(
                    _FirstPerClassFn(limit)).without_defaults())


class FirstPerClass(beam.PTransform):
    """Partial samples (see ``FirstPerClassPart``) -> {class: [(sample_id, item), ...]}."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def expand(self, parts):
        return parts | "FirstPerClass" >> beam.CombineGlobally(
            _FirstPerClassFn(self.limit)).without_defaults()


def run_rounds(pbegin, job: JobSpec, handlers: dict, consume_accepted, progress_dir=None,
               accelerator_hint=None):
    """Unrolled top-up rounds: a round's shortfall units feed the next round.

    ``handlers``: the generator's, the validator's and (or None) the judge's ModelHandler.
    ``consume_accepted(accepted, round)`` is applied to each round's accepted batches right where
    they are made and must return small outputs: the FnApiRunner cannot fuse a Flatten whose
    inputs come from different stages, so flattening the batches themselves would hold every
    accepted image in memory at once. Returns the flattened outputs of ``consume_accepted``
    (a tuple, one PCollection per position) and the flattened unit reports.
    """
    units = pbegin | "ExpandSpecs" >> ExpandSpecs(job)
    consumed, reports = [], []
    for r in range(job.max_rounds):
        out = units | f"Round{r}" >> GenerationRound(job, handlers, progress_dir,
                                                     accelerator_hint)
        consumed.append(consume_accepted(out["accepted"], r))
        reports.append(out["report"])
        units = out["top_up"]
    flattened = tuple(parts | f"AllRounds{i}" >> beam.Flatten()
                      for i, parts in enumerate(zip(*consumed)))
    return flattened, reports | "AllReports" >> beam.Flatten()
