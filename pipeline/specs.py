"""Label specs: read, parse and validate with one-line errors, then resolve into a job
(``pipeline.job``) that ``pipeline.units`` plans as work units."""
from __future__ import annotations

import glob
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import KepKreatorError
from kepkreator.config_files import RepeatedKeyError, parse_json, parse_yaml
from kepkreator.paths import not_local, remote_scheme
from kepkreator.thresholds import parse_thresholds
from pipeline.job import FORMATS, ORIENTATIONS, POLICIES, JobSpec, SpecError

MAX_PER_CLASS = 10_000_000
MAX_TOTAL = 100_000_000
MAX_SHARDS = 10_000
MAX_SPLITS = 16
KEYS = {"class_set", "generator", "validator", "counts", "seed", "min_confidence", "label_policy",
        "formats", "shards", "split", "orientation", "name", "unit_size", "max_rounds",
        "max_oversample", "latent_scale", "judge", "realism", "second_validator"}
# Keys every spec of one job must agree on (one dataset, one generator, one validator).
SHARED_KEYS = ("class_set", "generator", "validator", "min_confidence",
               "min_confidence_per_class", "label_policy", "formats",
               "shards", "splits", "orientation", "name", "unit_size", "max_rounds",
               "max_oversample", "latent_scale", "judge", "realism", "second_validator")

SPELLED = {"splits": "split", "min_confidence_per_class": "min_confidence"}


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


def _confidences(where: str, value,
                 class_set: ClassSet) -> tuple[float | None, dict[int, float]]:
    """``0.9``, or ``{default: 0.9, I: 0.5}``: a default (None where the map gives none: the
    generator card's, see ``JobSpec.resolve_defaults``) and the per-class thresholds."""
    try:
        default, per_class = parse_thresholds(value, "min_confidence", class_set)
    except KepKreatorError as exc:
        _fail(where, str(exc))
    return default, {class_set.index_of(k): v for k, v in per_class.items()}


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
    spec = dict(class_set=class_set.name,
                generator=_from_spec_dir(data["generator"], base_dir),
                validator=_from_spec_dir(data["validator"], base_dir),
                counts=_counts(where, data["counts"], class_set, base_dir))
    if "seed" in data:
        spec["seed"] = _int(where, "seed", data["seed"], 0, 2**63 - 1)
    if "min_confidence" in data:
        spec["min_confidence"], spec["min_confidence_per_class"] = _confidences(
            where, data["min_confidence"], class_set)
    if "label_policy" in data:
        if data["label_policy"] not in POLICIES:
            _fail(where, f"label_policy must be one of {', '.join(POLICIES)}, "
                         f"got {_shown(data['label_policy'])}")
        spec["label_policy"] = data["label_policy"]
    if "formats" in data:
        formats = data["formats"]
        formats = [formats] if isinstance(formats, str) else formats
        if not isinstance(formats, list) or not formats:
            _fail(where, "formats must be a non-empty list of parquet, tfrecord")
        for f in formats:
            if f not in FORMATS:
                _fail(where, f"unknown format {_shown(f)} (known: {', '.join(FORMATS)})")
        spec["formats"] = tuple(f for f in FORMATS if f in formats)
    if "shards" in data:
        spec["shards"] = _int(where, "shards", data["shards"], 1, MAX_SHARDS)
    if "split" in data:
        spec["splits"] = _splits(where, data["split"])
    if "orientation" in data:
        if data["orientation"] not in ORIENTATIONS:
            _fail(where, "orientation must be upright or emnist, "
                         f"got {_shown(data['orientation'])}")
        spec["orientation"] = data["orientation"]
    if "name" in data:
        name = str(data["name"])
        if not _is_file_name_part(name):
            _fail(where, f"name must be lower_snake_case, got {_shown(name)}")
        spec["name"] = name
    if "unit_size" in data:
        spec["unit_size"] = _int(where, "unit_size", data["unit_size"], 16, 1_000_000)
    if "max_rounds" in data:
        spec["max_rounds"] = _int(where, "max_rounds", data["max_rounds"], 1, 20)
    if "max_oversample" in data:
        value = data["max_oversample"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10_000:
            _fail(where, f"max_oversample must be a number in [1, 10000], got {_shown(value)}")
        spec["max_oversample"] = float(value)
    if "latent_scale" in data:
        value = data["latent_scale"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
            _fail(where, f"latent_scale must be a number in (0, 10], got {_shown(value)}")
        spec["latent_scale"] = float(value)
    for key in ("judge", "second_validator"):
        if key not in data:
            continue
        value = data[key]
        if value is None or value == "none":
            spec[key] = ""
        elif not isinstance(value, str) or not value.strip():
            _fail(where, f"{key} must be a bundle, default or none, got {_shown(value)}")
        else:
            spec[key] = value if value == "default" else _from_spec_dir(value, base_dir)
    if "realism" in data:
        spec["realism"] = _realism(where, data["realism"])
    spec["sources"] = [{"path": where, "seed": spec.get("seed", 0),
                        "counts": {class_set.chars[c]: n for c, n in spec["counts"].items()}}]
    total = sum(spec["counts"].values())
    if total > MAX_TOTAL:
        _fail(where, f"counts total {total:,} samples, more than the maximum {MAX_TOTAL:,}")
    return JobSpec(**spec)


def resolve(job: JobSpec) -> JobSpec:
    """``job`` with what it left to its generator's card (``JobSpec.with_card_defaults``): the
    card is read once, here, before any model loads."""
    if job.resolved:
        return job
    from kepkreator.evaluate import shipped_judge
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.models.card import read_card
    card = read_card(resolve_bundle_path(job.generator, "generator"))
    return job.with_card_defaults(card, job.generator, shipped_judge(job.class_set))


def load_specs(pattern: str) -> JobSpec:
    """One resolved job from one spec file or a glob of them (``read_specs``, ``resolve``)."""
    return resolve(read_specs(pattern))


def read_specs(pattern: str) -> JobSpec:
    """One job from one spec file or a glob of them; their counts add up, the rest must agree.
    Not yet resolved against the generator's card."""
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
        counts = dict(job.counts)
        for c, n in spec.counts.items():
            counts[c] = counts.get(c, 0) + n
        job = replace(job, counts=counts, sources=job.sources + spec.sources)
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


