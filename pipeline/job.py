"""The job: one resolved spec, immutable, as every step of the pipeline reads it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import KepKreatorError
from kepkreator.thresholds import format_thresholds, parse_thresholds, thresholds_value


class SpecError(KepKreatorError):
    """A spec, or what its generator's card adds to it, that cannot make a job."""


DEFAULT_CONFIDENCE = 0.9


FORMATS = ("parquet", "tfrecord")


POLICIES = ("conditioned", "relabel")


ORIENTATIONS = ("upright", "emnist")


@dataclass(frozen=True)
class JobSpec:
    """One job, as every step reads it. ``parse_spec`` leaves to the generator's card what the
    spec does not say; ``resolve`` (``load_specs`` calls it) fills that in once, from the card,
    into a new spec: the pipeline only ever sees resolved ones."""
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
    # radius; smaller is stricter). "default": the generator card's `sampling.realism` where
    # the spec leaves the threshold to the card too (the scan chose them together), else off.
    realism: float | None | str = "default"
    # A second validator that must also give the label at the same threshold, so a sample only
    # one classifier is sure of is dropped: "default" is the generator card's
    # `sampling.second_validator` (none where the card names none), "" none.
    second_validator: str = "default"
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

    @property
    def resolved(self) -> bool:
        return (self.min_confidence is not None and self.latent_scale is not None
                and self.judge != "default" and self.second_validator != "default"
                and self.realism != "default")

    def with_card_defaults(self, generator_card: dict, generator_ref: str,
                           shipped_judge: str | None = None) -> "JobSpec":
        """What the spec left to the generator's card: the filter threshold and latent scale it
        was sampled at (``kepkreator tune-sampling`` records both), the second validator it names,
        and the judge (``default``: ``shipped_judge``, or none). The card's scale is widened for
        filtered sampling: with every filter off it would hand the user the widened draw's
        malformed samples, so then the scale is 1."""
        from kepkreator.models.card import card_latent_scale
        sampling = generator_card.get("sampling") or {}
        realism = self.realism
        if realism == "default":
            realism = (sampling.get("realism") if self.min_confidence is None
                       and not self.min_confidence_per_class else None)
        default, per_class = self.min_confidence, dict(self.min_confidence_per_class)
        if default is None:
            card_default, card_per_class = DEFAULT_CONFIDENCE, {}
            if "min_confidence" in sampling:
                try:
                    card_default, named = parse_thresholds(sampling["min_confidence"],
                                                           "min_confidence", self.classes)
                except KepKreatorError as exc:
                    raise SpecError(f"generator card of {generator_ref}: {exc}") from None
                card_per_class = {self.classes.index_of(k): v for k, v in named.items()}
            default = DEFAULT_CONFIDENCE if card_default is None else card_default
            per_class = {**card_per_class, **per_class}
        per_class = {c: v for c, v in per_class.items() if v != default}
        job = replace(self, min_confidence=default, min_confidence_per_class=per_class,
                      realism=None if realism is None else float(realism),
                      judge=(shipped_judge or "") if self.judge == "default" else self.judge,
                      second_validator=(str(sampling.get("second_validator") or "")
                                        if self.second_validator == "default"
                                        else self.second_validator))
        if job.latent_scale is None:
            named = default if self.min_confidence is not None and not per_class else None
            scale = card_latent_scale(generator_card, named, job.realism) if job.filtered else 1.0
            job = replace(job, latent_scale=scale)
        return job

    @property
    def filtered(self) -> bool:
        """Whether any filter can refuse a sample (a threshold above 0, or realism)."""
        return (self.realism is not None or bool(self.min_confidence)
                or any(self.min_confidence_per_class.values()))

    def thresholds(self) -> np.ndarray:
        """The filter's confidence threshold for every class index."""
        if self.min_confidence is None:
            raise ValueError("min_confidence is not resolved yet (pipeline.specs.resolve)")
        out = np.full(self.classes.num_classes, self.min_confidence, np.float64)
        for c, value in self.min_confidence_per_class.items():
            out[c] = value
        return out

    def confidence_text(self) -> str:
        """The thresholds as a person reads them: ``0.9``, or ``0.9 (I: 0.5, L: 0.7)``."""
        return format_thresholds(self._thresholds_value())

    def _thresholds_value(self):
        chars = self.classes.chars
        return thresholds_value(self.min_confidence, {
            chars[c]: v for c, v in sorted(self.min_confidence_per_class.items())})

    def to_json(self) -> dict:
        out = asdict(self)
        del out["min_confidence_per_class"]
        out["min_confidence"] = self._thresholds_value()
        out["counts"] = {self.classes.chars[c]: n for c, n in sorted(self.counts.items())}
        out["formats"] = list(self.formats)
        del out["splits"]  # written back the way a spec file says it
        out["split"] = self.splits[0][0] if len(self.splits) == 1 else dict(self.splits)
        out["judge"] = self.judge or "none"
        out["realism"] = "off" if self.realism is None else self.realism
        out["second_validator"] = self.second_validator or "none"
        return out


def apportion(total: int, weights) -> np.ndarray:
    """``total`` split into integers in proportion to ``weights`` (largest remainders)."""
    weights = np.asarray(weights, np.float64)
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(np.int64)
    rest = total - int(counts.sum())
    counts[np.argsort(counts - share, kind="stable")[:rest]] += 1
    return counts
