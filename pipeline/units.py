"""Work units: the pipeline's atom, planned from a spec.

A unit is a quota of accepted samples per class, a number of candidates to draw, and a seed
derived from (job seed, spec, split, round, unit) — never from global state — so a retried unit
re-creates exactly the same samples and nothing is duplicated; a unit that falls short asks a
top-up unit of the next round for the rest.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.job import JobSpec, apportion


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str                 # stable, sortable: <split>-s<spec>-u<index>
    spec_index: int
    round: int
    quota: tuple[int, ...]       # accepted samples wanted per class index
    candidates: int              # samples to generate
    seed: tuple[int, ...]        # numpy SeedSequence entropy
    request: tuple[int, ...]     # round-0 quota: the budget, and the candidates' class mix
    spent: int = 0               # candidates drawn by earlier rounds of this unit
    # A top-up's class mix (candidates per class, relative), where it differs from the request.
    draw_weights: tuple[int, ...] | None = None
    split: str = "train"

    @property
    def wanted(self) -> int:
        return sum(self.quota)


def initial_candidates(quota: int) -> int:
    """Round-0 candidates: a little over the quota, so a good generator rarely needs a top-up."""
    return int(math.ceil(quota * 1.08)) + 8


def expand(job: JobSpec) -> list[WorkUnit]:
    """Round-0 work units: each spec file's counts cut into units of at most ``unit_size``.

    Every unit carries a share of every class's count, so every stretch of the output (a unit,
    a shard, the first thousand rows) holds the classes in the proportions asked for: a reader
    who takes the first rows, or shuffles with a small buffer, still sees every class.
    """
    classes = job.classes
    units = []
    for spec_index, source in enumerate(job.sources):
        by_split = job.split_quotas({classes.index_of(ch): n
                                     for ch, n in source["counts"].items()})
        for split, counts in by_split.items():
            total = sum(counts.values())
            n_units = max(1, math.ceil(total / job.unit_size))
            shares = {c: np.diff(np.linspace(0, n, n_units + 1).round().astype(int))
                      for c, n in counts.items()}
            for u in range(n_units):
                quota = [0] * classes.num_classes
                for c, share in shares.items():
                    quota[c] = int(share[u])
                if any(quota):
                    units.append(_unit(job, spec_index, 0, f"{split}-s{spec_index:03d}-u{u:07d}",
                                       quota, source["seed"], split, u, split_stream(split)))
    return units


def split_stream(split: str) -> int:
    """A split's part of every seed: two jobs that differ only in their split name (say a train
    and a validation job with the same seed) draw different samples, not the same ones."""
    return zlib.crc32(split.encode())


_LABEL_ORDER_STREAM = 1  # the candidates' class order draws from its own stream, not z's


def candidates_per_class(unit: WorkUnit) -> np.ndarray:
    """How many of the unit's candidates are requested as each class."""
    return apportion(unit.candidates, unit.draw_weights or unit.request)


def candidate_labels(unit: WorkUnit) -> np.ndarray:
    """The class each candidate is requested as: the unit's class mix, in a seeded random order,
    so accepted samples (kept earliest first) come out mixed rather than in class blocks."""
    counts = candidates_per_class(unit)
    labels = np.repeat(np.arange(len(counts)), counts)
    order = np.random.default_rng(np.random.SeedSequence([*unit.seed, _LABEL_ORDER_STREAM]))
    return order.permutation(labels)


def _unit(job, spec_index, round_, unit_id, quota, seed, split, *path) -> WorkUnit:
    wanted = sum(quota)
    return WorkUnit(unit_id=unit_id, spec_index=spec_index, round=round_, quota=tuple(quota),
                    candidates=initial_candidates(wanted),
                    seed=(int(seed), spec_index, round_, *[int(p) for p in path]),
                    request=tuple(quota), split=split)


# Top-up sizes are rounded up to this many candidates: every distinct batch shape costs the
# CPU kernels (oneDNN and others) cached memory, and free-form shortfalls would make the peak RSS
# grow with the job's length.
TOP_UP_QUANTUM = 64


def top_up(job: JobSpec, unit: WorkUnit, shortfall: list[int],
           accepted_per_class) -> WorkUnit | None:
    """The follow-up unit for a shortfall, or None at the bound.

    Each short class's need is its shortfall over its acceptance in this round (a class never
    seen gets the bound's rate). Under ``conditioned`` the candidates are aimed: the unit draws
    the sum of the needs, each class its own. Under ``relabel`` any candidate may land in any
    class, so the slowest short class sizes the unit, and a rare class gets enough in one go.
    """
    if unit.round + 1 >= job.max_rounds or not any(shortfall):
        return None
    floor = 1.0 / job.max_oversample
    short = np.asarray(shortfall, np.float64)
    accepted = np.asarray(accepted_per_class, np.float64)
    aimed = job.label_policy != "relabel"
    drawn = candidates_per_class(unit) if aimed else np.full(len(short), unit.candidates)
    rate = np.maximum(np.divide(accepted, drawn, out=np.zeros_like(accepted), where=drawn > 0),
                      floor)
    need = np.where(short > 0, short / rate, 0.0)
    spent = unit.spent + unit.candidates
    budget = int(job.max_oversample * sum(unit.request))
    total = need.sum() if aimed else need.max()
    wanted = TOP_UP_QUANTUM * math.ceil((math.ceil(total * 1.25) + 16) / TOP_UP_QUANTUM)
    candidates = min(wanted, max(budget - spent, 0))
    if candidates <= 0:
        return None
    return WorkUnit(unit_id=unit.unit_id, spec_index=unit.spec_index, round=unit.round + 1,
                    quota=tuple(shortfall), candidates=candidates,
                    seed=(*unit.seed[:2], unit.round + 1, *unit.seed[3:]), request=unit.request,
                    spent=spent,
                    draw_weights=tuple(int(math.ceil(n)) for n in need) if aimed else None,
                    split=unit.split)
