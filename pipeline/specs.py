"""Label specs: parse, validate with one-line errors, and expand into work units.

A work unit is the pipeline's atom: a quota of accepted samples per class, a number of
candidates to draw, and a seed derived from (job seed, spec, round, unit) — never from global
state — so a retried unit re-creates exactly the same samples and nothing is duplicated.
"""
from __future__ import annotations

import glob
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import KepKreatorError
from kepkreator.handwritten import RepeatedKeyError, parse_json, parse_yaml
from kepkreator.paths import not_local, remote_scheme

MAX_PER_CLASS = 10_000_000
MAX_TOTAL = 100_000_000
MAX_SHARDS = 10_000
MAX_SPLITS = 16
DEFAULT_CONFIDENCE = 0.9
FORMATS = ("parquet", "tfrecord")
POLICIES = ("conditioned", "relabel")
ORIENTATIONS = ("upright", "emnist")
KEYS = {"class_set", "generator", "validator", "counts", "seed", "min_confidence", "label_policy",
        "formats", "shards", "split", "orientation", "name", "unit_size", "max_rounds",
        "max_oversample", "latent_scale", "judge", "realism"}
# Keys every spec of one job must agree on (one dataset, one generator, one validator).
SHARED_KEYS = ("class_set", "generator", "validator", "min_confidence",
               "min_confidence_per_class", "label_policy", "formats",
               "shards", "splits", "orientation", "name", "unit_size", "max_rounds",
               "max_oversample", "latent_scale", "judge", "realism")

SPELLED = {"splits": "split", "min_confidence_per_class": "min_confidence"}


class SpecError(KepKreatorError):
    pass


@dataclass
class JobSpec:
    class_set: str
    generator: str
    validator: str
    counts: dict[int, int]                  # class index -> accepted samples wanted
    seed: int = 0
    # None: the generator card's choice (`sampling.min_confidence`, what its CAS was measured
    # at), else DEFAULT_CONFIDENCE; resolved by ``resolve_defaults`` once the card is read.
    min_confidence: float | None = None
    # Classes whose threshold differs (class index -> threshold): `min_confidence: {default: 0.9,
    # I: 0.5}` for a class the validator confuses with another (I and l), so one ambiguous class
    # need not lower the bar for all of them.
    min_confidence_per_class: dict[int, float] = field(default_factory=dict)
    label_policy: str = "conditioned"
    formats: tuple[str, ...] = FORMATS
    shards: int = 4
    # (name, fraction of every class's count), in the spec's order; fractions sum to 1
    splits: tuple[tuple[str, float], ...] = (("train", 1.0),)
    orientation: str = "upright"
    name: str = ""
    unit_size: int = 1024                   # accepted samples a unit aims for (one model call)
    max_rounds: int = 4                     # 1 + top-up rounds
    max_oversample: float = 20.0            # candidates <= this x quota, per unit
    # z ~ N(0, latent_scale^2). Above 1 the draw reaches past the generator's typical set (more
    # varied samples, more rejected by the filter); None: the generator card's choice, else 1.
    latent_scale: float | None = None
    # The independent classifier that measures (never filters): "default" is the class set's
    # shipped judge where there is one; "" none.
    judge: str = "default"
    # The realism filter: None off; else the radius scale a sample must fall within, of some
    # real image of its class in the validator's reference bank (1: that image's own k-NN
    # radius; smaller is stricter).
    realism: float | None = None
    sources: list[dict] = field(default_factory=list)  # per spec file: path, counts, seed

    @property
    def classes(self) -> ClassSet:
        return get_class_set(self.class_set)

    @property
    def dataset_name(self) -> str:
        return self.name or f"kepkreator_{self.class_set}"

    @property
    def split_names(self) -> list[str]:
        return [name for name, _ in self.splits]

    def split_quotas(self, counts: dict[int, int]) -> dict[str, dict[int, int]]:
        """``counts`` cut into the splits, every class on its own (largest remainders), so each
        split holds the classes in the proportions asked for and the parts add up exactly."""
        fractions = [fraction for _, fraction in self.splits]
        out = {name: {} for name in self.split_names}
        for c, n in counts.items():
            for name, part in zip(self.split_names, apportion(n, fractions)):
                out[name][c] = int(part)
        return out

    def requested_per_split(self) -> dict[str, np.ndarray]:
        """Accepted samples wanted per split and class index, summed over the spec files the
        way ``expand`` cuts them."""
        out = {name: np.zeros(self.classes.num_classes, np.int64) for name in self.split_names}
        for source in self.sources:
            counts = {self.classes.index_of(ch): n for ch, n in source["counts"].items()}
            for name, quota in self.split_quotas(counts).items():
                for c, n in quota.items():
                    out[name][c] += n
        return out

    def shards_of(self, split: str) -> int:
        """``shards`` for the largest split, the others in proportion (at least one each)."""
        fractions = dict(self.splits)
        return max(1, round(self.shards * fractions[split] / max(fractions.values())))

    def resolve_defaults(self, generator_card: dict, generator_ref: str) -> None:
        """Fill what the spec left to the generator's card: the latent scale and the filter
        threshold it was sampled at (``kepkreator tune-sampling`` records both). The card's
        scale is widened for filtered sampling: with every filter off it would hand the user
        the widened draw's malformed samples, so then the scale is 1."""
        from kepkreator.models.bundle import card_latent_scale
        sampling = generator_card.get("sampling") or {}
        if self.min_confidence is None:
            default, per_class = DEFAULT_CONFIDENCE, {}
            if "min_confidence" in sampling:
                default, per_class = _confidences(f"generator card of {generator_ref}",
                                                  sampling["min_confidence"], self.classes)
            self.min_confidence = DEFAULT_CONFIDENCE if default is None else default
            self.min_confidence_per_class = {**per_class, **self.min_confidence_per_class}
        self.min_confidence_per_class = {c: v for c, v in self.min_confidence_per_class.items()
                                         if v != self.min_confidence}
        if self.latent_scale is None:
            self.latent_scale = card_latent_scale(generator_card) if self.filtered else 1.0

    @property
    def filtered(self) -> bool:
        """Whether any filter can refuse a sample (a threshold above 0, or realism)."""
        return (self.realism is not None or bool(self.min_confidence)
                or any(self.min_confidence_per_class.values()))

    def thresholds(self) -> np.ndarray:
        """The filter's confidence threshold for every class index."""
        if self.min_confidence is None:
            raise ValueError("min_confidence is not resolved yet (JobSpec.resolve_defaults)")
        out = np.full(self.classes.num_classes, self.min_confidence, np.float64)
        for c, value in self.min_confidence_per_class.items():
            out[c] = value
        return out

    def confidence_text(self) -> str:
        """The thresholds as a person reads them: ``0.9``, or ``0.9 (I: 0.5, L: 0.7)``."""
        chars = self.classes.chars
        extra = ", ".join(f"{chars[c]}: {v:g}"
                          for c, v in sorted(self.min_confidence_per_class.items()))
        return f"{self.min_confidence:g}" + (f" ({extra})" if extra else "")

    def to_json(self) -> dict:
        out = asdict(self)
        del out["min_confidence_per_class"]
        if self.min_confidence_per_class:
            out["min_confidence"] = {"default": self.min_confidence, **{
                self.classes.chars[c]: v for c, v in sorted(self.min_confidence_per_class.items())}}
        out["counts"] = {self.classes.chars[c]: n for c, n in sorted(self.counts.items())}
        out["formats"] = list(self.formats)
        del out["splits"]  # written back the way a spec file says it
        out["split"] = self.splits[0][0] if len(self.splits) == 1 else dict(self.splits)
        out["judge"] = self.judge or "none"
        out["realism"] = "off" if self.realism is None else self.realism
        return out


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


def _fail(where: str, message: str):
    raise SpecError(f"{where}: {message}")


def _shown(value) -> str:
    """A spec value as the file spells it (``true``, ``null``, ``[1, 2]``), not as Python's repr
    would (``True``, ``None``); strings quoted like the key names; cut so errors stay one line."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(where, key, value, low=None, high=None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            _fail(where, f"{key} must be a whole number, got {_shown(value)}")
    if low is not None and value < low:
        _fail(where, f"{key} must be at least {low}, got {value}")
    if high is not None and value > high:
        _fail(where, f"{key} must be at most {high:,}, got {value:,}")
    return value


def read_spec_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec {path}: {exc}") from None
    try:
        data = parse_json(text) if path.suffix == ".json" else parse_yaml(text)
    except RepeatedKeyError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: malformed JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: malformed YAML{where}: "
                        f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping of keys, got {type(data).__name__}")
    return data


def read_label_histogram(path: str, class_set: ClassSet, where: str) -> np.ndarray:
    """Counts per class from an IDX labels file, a JSON of counts, or a dataset made by this tool."""
    from pipeline.manifest import dataset_class_counts  # reads Parquet/TFRecord outputs
    p = Path(path)
    if not p.exists():
        _fail(where, f"balance_to labels not found: {path}")
    try:
        if p.is_dir():
            return dataset_class_counts(p, class_set)
        if p.suffix == ".json":
            counts = parse_json(p.read_text())
            if not isinstance(counts, dict):
                _fail(where, f"balance_to labels {path} must be a JSON object of counts")
            hist = np.zeros(class_set.num_classes, np.int64)
            for char, n in counts.items():
                hist[class_set.index_of(str(char))] += _int(where, f"count of {char!r}", n, 0)
            return hist
        from kepkreator.data import read_idx
        ids = read_idx(p)
        if ids.ndim != 1:
            _fail(where, f"balance_to labels {path} is not a 1-d IDX labels file")
        lookup = {e: i for i, e in enumerate(class_set.emnist_ids)}
        unknown = sorted(set(np.unique(ids).tolist()) - set(lookup))
        if unknown:
            _fail(where, f"balance_to labels {path} has ids {unknown[:5]} outside "
                         f"{class_set.name!r}")
        return np.bincount([lookup[i] for i in ids.tolist()], minlength=class_set.num_classes)
    except SpecError:
        raise
    except KepKreatorError as exc:
        _fail(where, f"balance_to labels {path}: {exc}")
    except (OSError, ValueError) as exc:
        _fail(where, f"balance_to labels {path} unreadable: {exc}")


def _counts(where: str, raw, class_set: ClassSet, base_dir: Path) -> dict[int, int]:
    if not isinstance(raw, dict) or not raw:
        _fail(where, "counts must be {per_class: N}, a map of class -> N, or "
                     "{balance_to: {labels: PATH, target: N}}")
    if "per_class" in raw:
        if len(raw) > 1:
            _fail(where, "counts: per_class cannot be combined with other keys")
        n = _int(where, "counts.per_class", raw["per_class"], 1, MAX_PER_CLASS)
        return {c: n for c in range(class_set.num_classes)}
    if "balance_to" in raw:
        if len(raw) > 1:
            _fail(where, "counts: balance_to cannot be combined with other keys")
        bal = raw["balance_to"]
        if not isinstance(bal, dict) or set(bal) != {"labels", "target"}:
            _fail(where, "counts.balance_to needs exactly the keys labels and target")
        target = _int(where, "counts.balance_to.target", bal["target"], 1, MAX_PER_CLASS)
        labels = _from_spec_dir(bal["labels"], base_dir)
        hist = read_label_histogram(labels, class_set, where)
        return {c: int(target - h) for c, h in enumerate(hist) if h < target}
    counts = {}
    for char, n in raw.items():
        try:
            c = class_set.index_of(str(char))
        except KepKreatorError as exc:
            _fail(where, f"counts: {exc}")
        counts[c] = counts.get(c, 0) + _int(where, f"counts[{char!r}]", n, 1, MAX_PER_CLASS)
    return counts


def _confidence(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        _fail(where, f"{key} must be a number in [0, 1), got {_shown(value)}")
    return float(value)


def _confidences(where: str, value,
                 class_set: ClassSet) -> tuple[float | None, dict[int, float]]:
    """``0.9``, or ``{default: 0.9, I: 0.5}``: a default (None where the map gives none: the
    generator card's, see ``JobSpec.resolve_defaults``) and the per-class thresholds."""
    if not isinstance(value, dict):
        return _confidence(where, "min_confidence", value), {}
    default, per_class = None, {}
    for key, threshold in value.items():
        if key == "default":
            default = _confidence(where, "min_confidence.default", threshold)
            continue
        key = str(key)
        if key not in class_set.chars:
            _fail(where, f"min_confidence: class {key!r} is not in class set "
                         f"{class_set.name!r} (or use the key default)")
        per_class[class_set.index_of(key)] = _confidence(where, f"min_confidence.{key}",
                                                         threshold)
    return default, per_class


def _realism(where: str, value) -> float | None:
    """``off`` (or false), ``on`` (or true: radius scale 1), or the radius scale in (0, 10]."""
    if value in ("off", False):
        return None
    if value in ("on", True):
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
        _fail(where, f"realism must be off, on or a radius scale in (0, 10], got {_shown(value)}")
    return float(value)


def _is_file_name_part(name) -> bool:
    """lower_snake_case ASCII: split and dataset names become file names, and Train/train
    would be one file on case-insensitive file systems (macOS, Windows)."""
    return (isinstance(name, str) and name.isascii() and name.replace("_", "").isalnum()
            and name[0].isalpha() and name == name.lower())


def _split_name(where: str, name) -> str:
    if not _is_file_name_part(name):
        _fail(where, f"split must be a simple lower-case name like train or test, "
                     f"got {_shown(name)}")
    return name


def _splits(where: str, value) -> tuple[tuple[str, float], ...]:
    """``split: train`` (one split), or ``split: {train: 0.9, validation: 0.1}``: every class's
    count cut by these fractions, each split drawn from its own seeds, so no sample is in two."""
    if not isinstance(value, dict):
        return ((_split_name(where, str(value)), 1.0),)
    if not value:
        _fail(where, "split: give a name, or a map of split names to fractions")
    if len(value) > MAX_SPLITS:
        _fail(where, f"split: at most {MAX_SPLITS} splits, got {len(value)}")
    splits = []
    for name, fraction in value.items():
        _split_name(where, name)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 < fraction <= 1:
            _fail(where, f"split {name}: fraction must be a number in (0, 1], "
                         f"got {_shown(fraction)}")
        splits.append((name, float(fraction)))
    total = sum(f for _, f in splits)
    if abs(total - 1) > 1e-6:
        _fail(where, f"split fractions must add up to 1, got {total:g}")
    return tuple(splits)


def _from_spec_dir(raw, base_dir: Path) -> str:
    """A relative path in a spec (a bundle, balance_to's labels) is read from the spec file's
    folder, so a spec means the same from any working directory."""
    ref = str(raw)
    if ref.startswith("default:") or remote_scheme(ref) or Path(ref).is_absolute():
        return ref
    return str(base_dir / ref)


def parse_spec(data: dict, where: str = "spec", base_dir: Path = Path(".")) -> JobSpec:
    unknown = sorted(set(data) - KEYS)
    if unknown:
        import difflib
        near = difflib.get_close_matches(str(unknown[0]), KEYS, n=1)
        _fail(where, f"unknown key {unknown[0]!r}" + (f": did you mean {near[0]!r}?" if near
                                                      else f" (known: {', '.join(sorted(KEYS))})"))
    for key in ("class_set", "generator", "validator", "counts"):
        if key not in data:
            _fail(where, f"missing required key {key!r}")
    try:
        class_set = get_class_set(str(data["class_set"]))
    except KepKreatorError as exc:
        _fail(where, str(exc))
    spec = JobSpec(class_set=class_set.name,
                   generator=_from_spec_dir(data["generator"], base_dir),
                   validator=_from_spec_dir(data["validator"], base_dir),
                   counts=_counts(where, data["counts"], class_set, base_dir))
    if "seed" in data:
        spec.seed = _int(where, "seed", data["seed"], 0, 2**63 - 1)
    if "min_confidence" in data:
        spec.min_confidence, spec.min_confidence_per_class = _confidences(
            where, data["min_confidence"], class_set)
    if "label_policy" in data:
        if data["label_policy"] not in POLICIES:
            _fail(where, f"label_policy must be one of {', '.join(POLICIES)}, "
                         f"got {_shown(data['label_policy'])}")
        spec.label_policy = data["label_policy"]
    if "formats" in data:
        formats = data["formats"]
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not formats:
            _fail(where, "formats must be a non-empty list of parquet, tfrecord")
        for f in formats:
            if f not in FORMATS:
                _fail(where, f"unknown format {_shown(f)} (known: {', '.join(FORMATS)})")
        spec.formats = tuple(f for f in FORMATS if f in formats)
    if "shards" in data:
        spec.shards = _int(where, "shards", data["shards"], 1, MAX_SHARDS)
    if "split" in data:
        spec.splits = _splits(where, data["split"])
    if "orientation" in data:
        if data["orientation"] not in ORIENTATIONS:
            _fail(where, "orientation must be upright or emnist, "
                         f"got {_shown(data['orientation'])}")
        spec.orientation = data["orientation"]
    if "name" in data:
        name = str(data["name"])
        if not _is_file_name_part(name):
            _fail(where, f"name must be lower_snake_case, got {_shown(name)}")
        spec.name = name
    if "unit_size" in data:
        spec.unit_size = _int(where, "unit_size", data["unit_size"], 16, 1_000_000)
    if "max_rounds" in data:
        spec.max_rounds = _int(where, "max_rounds", data["max_rounds"], 1, 20)
    if "max_oversample" in data:
        value = data["max_oversample"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10_000:
            _fail(where, f"max_oversample must be a number in [1, 10000], got {_shown(value)}")
        spec.max_oversample = float(value)
    if "latent_scale" in data:
        value = data["latent_scale"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
            _fail(where, f"latent_scale must be a number in (0, 10], got {_shown(value)}")
        spec.latent_scale = float(value)
    if "judge" in data:
        value = data["judge"]
        if value is None or value == "none":
            spec.judge = ""
        elif not isinstance(value, str) or not value.strip():
            _fail(where, f"judge must be a bundle, default or none, got {_shown(value)}")
        else:
            spec.judge = value if value == "default" else _from_spec_dir(value, base_dir)
    if "realism" in data:
        spec.realism = _realism(where, data["realism"])
    spec.sources = [{"path": where, "seed": spec.seed,
                     "counts": {class_set.chars[c]: n for c, n in spec.counts.items()}}]
    total = sum(spec.counts.values())
    if total > MAX_TOTAL:
        _fail(where, f"counts total {total:,} samples, more than the maximum {MAX_TOTAL:,}")
    return spec


def load_specs(pattern: str) -> JobSpec:
    """One job from one spec file or a glob of them; their counts add up, the rest must agree."""
    if not_local(pattern):
        raise SpecError(f"--spec {not_local(pattern)}")
    paths = sorted(Path(p) for p in glob.glob(pattern)) if any(ch in pattern for ch in "*?[") \
        else [Path(pattern)]
    if not paths:
        raise SpecError(f"no spec files match {pattern!r}")
    job = None
    for index, path in enumerate(paths):
        spec = parse_spec(read_spec_file(path), str(path), path.parent)
        if job is None:
            job = spec
            continue
        for key in SHARED_KEYS:
            if getattr(spec, key) != getattr(job, key):
                name = SPELLED.get(key, key)  # as the spec files spell it
                mine, first = spec.to_json()[name], job.to_json()[name]
                raise SpecError(f"{path}: {name} differs from {paths[0]} "
                                f"({_shown(mine)} vs {_shown(first)}); one job makes one dataset")
        for c, n in spec.counts.items():
            job.counts[c] = job.counts.get(c, 0) + n
        job.sources.extend(spec.sources)
    if not job.counts or sum(job.counts.values()) == 0:
        raise SpecError(f"{pattern}: nothing to generate (every class already meets its target)")
    for name, wanted in job.requested_per_split().items():
        if not wanted.sum():
            raise SpecError(f"{pattern}: split {name!r} gets no samples (its fraction of the "
                            "counts rounds to zero)")
        if job.shards_of(name) > wanted.sum():  # shards of no rows: files that only look full
            raise SpecError(f"{pattern}: shards {job.shards} would give split {name!r} "
                            f"{job.shards_of(name):,} shards for {int(wanted.sum()):,} samples, "
                            "some of them empty; give fewer shards")
    return job


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


def apportion(total: int, weights) -> np.ndarray:
    """``total`` split into integers in proportion to ``weights`` (largest remainders)."""
    weights = np.asarray(weights, np.float64)
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    rest = total - int(counts.sum())
    counts[np.argsort(counts - share, kind="stable")[:rest]] += 1
    return counts


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
# CPU kernels (oneDNN and others) cached memory, and free-form shortfalls made the peak RSS grow
# with the job's length (bench (d)).
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
