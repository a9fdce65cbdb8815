"""ComputeClassMetrics: one CombineFn over the unit reports, and metrics.json made from it.

Per class: requested, accepted, generated, how many passed each filter, confidence; the
validator's inception scores on all candidates; the judge's agreement on every candidate and on
the kept ones. The validator's scores of what it kept itself are true by construction, so they
are kept for the inception scores alone and not offered as a quality figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from kepkreator.manifold import FIGURES
from kepkreator.metrics import ClassStats, class_report


@dataclass
class Totals:
    """The sums ComputeClassMetrics keeps over every unit report; ``+`` merges two."""
    generated: ClassStats
    accepted: ClassStats
    requested: np.ndarray
    got: np.ndarray
    passed: np.ndarray
    passed_confidence: np.ndarray
    passed_realism: np.ndarray
    passed_second_validator: np.ndarray
    judge_generated: ClassStats
    judge_accepted: ClassStats
    units: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> "Totals":
        zeros = lambda: np.zeros(num_classes, np.int64)
        stats = lambda: ClassStats.zeros(num_classes)
        return cls(stats(), stats(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(),
                   stats(), stats())

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(*(getattr(self, f) + getattr(other, f)
                        for f in self.__dataclass_fields__))

    def add(self, report: UnitReport) -> "Totals":
        first = report.round == 0
        zeros = np.zeros_like(self.got)
        return self + Totals(
            report.generated, report.accepted,
            np.asarray(report.quota) if first else zeros, report.accepted_per_class,
            report.passed_per_class, report.passed_confidence, report.passed_realism,
            report.passed_second_validator,
            report.judge_generated or ClassStats.zeros(len(zeros)),
            report.judge_accepted or ClassStats.zeros(len(zeros)), int(first))


class ClassMetricsFn(beam.CombineFn):
    """Per-class generated / accepted / acceptance / confidence, IS, BCIS, WCIS, and the
    judge's agreement, in one pass."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def create_accumulator(self):
        return Totals.zeros(self.num_classes)

    def add_input(self, acc, report: UnitReport):
        return acc.add(report)

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        out = accumulators[0]
        for other in accumulators[1:]:
            out = out + other
        return out

    def extract_output(self, acc):
        return acc


def _rate(hits, n):
    return float(hits / n) if n else None


def class_metrics(acc: Totals, labels: list[str], judged: bool = False,
                  fidelity: dict | None = None) -> dict:
    """The metrics.json payload from the combiner's totals (plain Python, no Beam).
    ``fidelity``: precision, recall, density and coverage of the accepted samples
    (``sample_fidelity``)."""
    per_class = {}
    for c, label in enumerate(labels):
        n_gen = int(acc.generated.count[c])
        if not acc.requested[c] and not n_gen and not acc.got[c]:
            continue
        row = {
            "requested": int(acc.requested[c]), "accepted": int(acc.got[c]),
            "shortfall": int(max(acc.requested[c] - acc.got[c], 0)), "generated": n_gen,
            "passed_filter": int(acc.passed[c]),
            "passed_confidence": int(acc.passed_confidence[c]),
            "passed_realism": int(acc.passed_realism[c]),
            "passed_second_validator": int(acc.passed_second_validator[c]),
            "acceptance_rate": _rate(acc.passed[c], n_gen),
            "mean_confidence_accepted": _rate(acc.accepted.sum_conf[c], acc.accepted.count[c]),
            "agreement_generated": _rate(acc.generated.hits[c], n_gen),
        }
        if judged:
            row["judge_agreement_generated"] = _rate(acc.judge_generated.hits[c],
                                                     acc.judge_generated.count[c])
            row["judge_agreement_accepted"] = _rate(acc.judge_accepted.hits[c],
                                                    acc.judge_accepted.count[c])
        if fidelity and label in fidelity["per_class"]:
            row.update({k: fidelity["per_class"][label][k] for k in FIGURES})
        per_class[label] = row
    generated = class_report(acc.generated, labels)
    generated.pop("per_class")
    # The validator's scores of what it accepted itself are true by construction: kept for the
    # inception scores' sake under their own name, not offered as a quality figure.
    accepted = class_report(acc.accepted, labels)
    for key in ("per_class", "agreement", "mean_confidence"):
        accepted.pop(key)
    out = {"work_units": int(acc.units), "requested": int(acc.requested.sum()),
           "accepted": int(acc.got.sum()), "generated": int(acc.generated.count.sum()),
           "passed_filter": int(acc.passed.sum()),
           "passed_confidence": int(acc.passed_confidence.sum()),
           "passed_realism": int(acc.passed_realism.sum()),
           "passed_second_validator": int(acc.passed_second_validator.sum()),
           "shortfall": int(np.maximum(acc.requested - acc.got, 0).sum()),
           "generated_samples": generated, "accepted_samples_validator_scores": accepted}
    if judged:
        out["judge"] = {
            "agreement_generated": _rate(acc.judge_generated.hits.sum(),
                                         acc.judge_generated.count.sum()),
            "agreement_accepted": _rate(acc.judge_accepted.hits.sum(),
                                        acc.judge_accepted.count.sum())}
    if fidelity:
        out["fidelity"] = {k: v for k, v in fidelity.items() if k != "per_class"}
    out["per_class"] = per_class
    return out


class ComputeClassMetrics(beam.PTransform):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def expand(self, reports):
        return reports | "CombineClassStats" >> beam.CombineGlobally(
            ClassMetricsFn(self.num_classes)).without_defaults()


@dataclass
class UnitReport:
    unit_id: str
    round: int
    quota: tuple[int, ...]
    accepted_per_class: np.ndarray
    passed_per_class: np.ndarray  # passed the filter, before quotas cut the surplus
    generated: ClassStats   # every candidate, keyed by the requested class
    accepted: ClassStats    # the kept samples, keyed by their dataset label
    # Per filter alone, by the label a candidate would get: the confidence test, the realism
    # test, the second validator's test (every candidate passes a test that is off).
    passed_confidence: np.ndarray | None = None
    passed_realism: np.ndarray | None = None
    passed_second_validator: np.ndarray | None = None
    judge_generated: ClassStats | None = None  # the judge on every candidate, requested class
    judge_accepted: ClassStats | None = None   # the judge on the kept ones, their label
