"""The job's pipeline, built: the bundles checked once, the named transforms wired in
data-flow order, and the last step that draws samples.png and measures density and coverage."""
from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import numpy as np

from kepkreator.errors import KepKreatorError
from kepkreator.manifold import CHUNKS, FIGURES
from pipeline import fileio, sinks
from pipeline.handlers import (GeneratorHandler, JudgeHandler, SecondValidatorHandler,
                               ValidatorHandler)
from pipeline.job import JobSpec
from pipeline.metrics import ComputeClassMetrics, class_metrics
from pipeline.options import GenerateOptions, is_dask
from pipeline.transforms import (SAMPLES_PER_CLASS_IN_GRID, FirstPerClass, FirstPerClassPart,
                                 run_rounds)


def check_bundles(job: JobSpec) -> tuple[dict, dict]:
    """Load both bundles once here, so a bad bundle fails before any worker starts. Returns what
    the manifest records of them and the generator's card as read now, beside its sha256, so the
    dataset card quotes the card that the sha256 names."""
    from kepkreator.models.bundle import load_bundle, require_class_set
    generator = load_bundle(job.generator, "generator")
    validator = load_bundle(job.validator, "validator")
    require_class_set(generator, validator.class_set, "generator", "validator class set")
    if generator.class_set.name != job.class_set:
        raise KepKreatorError(f"spec class_set {job.class_set!r} differs from the bundles' "
                              f"{generator.class_set.name!r}")
    if job.realism is not None and validator.reference_bank() is None:
        raise KepKreatorError(f"realism needs a reference bank in the validator {job.validator} "
                              "(kepkreator reference BUNDLE --data REAL)")
    loaded = [("generator", job.generator, generator), ("validator", job.validator, validator)]
    for role in ("second_validator", "judge"):
        bundle = _other_classifier(job, role)
        if bundle is not None:
            loaded.append((role, getattr(job, role), bundle))
    # load_bundle verified each model file against its card's model_sha256.
    return ({kind: {"ref": ref, "path": str(b.path.resolve()), "card_sha256": b.card_sha256,
                    "model_sha256": b.card["model_sha256"], "model_verified": True,
                    "name": b.card.get("name", "")}
             for kind, ref, b in loaded}, generator.card)


def _other_classifier(job: JobSpec, role: str):
    """The judge or second validator bundle the (resolved) spec names; None where there is
    none."""
    from kepkreator.models.bundle import load_bundle, require_class_set
    if not getattr(job, role):
        return None
    from kepkreator.classsets import get_class_set
    bundle = load_bundle(getattr(job, role), role)
    require_class_set(bundle, get_class_set(job.class_set), role, "the spec's")
    return bundle


def sample_fidelity(first_features: dict, job: JobSpec, judge_path: str) -> dict | None:
    """Precision, recall, density and coverage (kepkreator.manifold) of the first CHUNKS x M
    accepted samples of each class, in draws of M, against the judge's reference bank of M real
    images per class, with the bank's yardstick (M other real images per class) beside them;
    None without a bank."""
    from kepkreator.models.bundle import load_bundle
    judge = load_bundle(judge_path, "judge")
    bank = judge.reference_bank()
    if bank is None or not first_features:
        return None
    labels = np.concatenate([[c] * len(rows) for c, rows in sorted(first_features.items())])
    features = np.stack([f for _, rows in sorted(first_features.items()) for _, f in rows])
    reference = judge.card["reference"]
    report = bank.compare(features, labels, chunk=reference["per_class"])
    chars = job.classes.chars
    return {**{k: report[k] for k in FIGURES}, "samples_per_class": reference["per_class"],
            "draws_per_class": min(row["draws"] for row in report["per_class"].values()),
            "real_vs_real": {k: reference["yardstick"].get(k) for k in FIGURES},
            "per_class": {chars[c]: row for c, row in report["per_class"].items()}}


def _finalize(grouped, job: JobSpec, bundles: dict, publish_root: str, staging: str):
    """Last pipeline step: samples.png (staged), and the metrics and shard list for run().
    ``grouped``: (None, the (name, value) of the shards, totals, grid and features); a part
    with no input (nothing accepted) is missing."""
    from kepkreator.imageio import grid_png
    from pipeline.metrics import Totals
    results = dict(grouped[1])
    shard_infos, grid = results.get("shards", []), results.get("grid", {})
    totals = results.get("totals", Totals.zeros(job.classes.num_classes))
    first_features = results.get("features", {})
    judge = bundles.get("judge")
    fidelity = sample_fidelity(first_features, job, judge["path"]) if judge else None
    metrics = class_metrics(totals, list(job.classes.chars), judged=judge is not None,
                            fidelity=fidelity)
    rows = [c for c in range(job.classes.num_classes) if c in grid]
    if rows:
        width = SAMPLES_PER_CLASS_IN_GRID
        images = np.zeros((len(rows) * width, 28, 28), np.uint8)
        for r, c in enumerate(rows):
            for i, (_, image) in enumerate(grid[c]):
                images[r * width + i] = image.T if job.orientation == "emnist" else image
        fileio.write_bytes(fileio.join(publish_root, "samples.png"), grid_png(images, len(rows)))
    order = {split: i for i, split in enumerate(job.split_names)}
    result = {"metrics": metrics, "shards": [
        {"split": s.split, "index": s.index, "records": s.rows, "class_counts": s.class_counts,
         "files": s.files}
        for s in sorted(shard_infos, key=lambda s: (order[s.split], s.index))]}
    fileio.write_bytes(fileio.join(staging, "result.json"), json.dumps(result).encode())


def build_pipeline(p, job: JobSpec, bundles: dict, staging: str, publish_root: str,
                   settings: GenerateOptions) -> None:
    """Every file goes to ``staging`` (this run's own folder); shards and samples.png under
    ``publish_root``, with the relative names they are published under."""
    progress = None
    if fileio.is_local(staging):  # workers on this machine report progress through small files
        progress = Path(staging) / "progress"
        progress.mkdir(parents=True, exist_ok=True)
    threads = (settings.max_units_per_batch, settings.intra_op_threads)
    if is_dask(p.options):
        # Beam's DaskRunner keeps what a DoFn emits while processing, not what it emits when
        # its bundle finishes: BatchElements' last batch of every partition would be lost.
        # Without RunInference's batching nothing waits for the bundle's end (and a unit is
        # one model call anyway).
        threads = (0, settings.intra_op_threads)
    handlers = {
        "generator": GeneratorHandler(bundles["generator"]["path"], *threads, job.latent_scale),
        "validator": ValidatorHandler(bundles["validator"]["path"], *threads, job.realism,
                                      job.label_policy),
        "second_validator": (SecondValidatorHandler(bundles["second_validator"]["path"], *threads)
                             if "second_validator" in bundles else None),
        "judge": JudgeHandler(bundles["judge"]["path"], *threads) if "judge" in bundles else None}
    feature_sample = _feature_sample_size(bundles)

    def consume(accepted, r):  # inside round r's fused stage: only small results leave it
        fragments = accepted | f"Sinks{r}" >> sinks.WriteFragments(job, staging)
        grid = accepted | f"GridPart{r}" >> FirstPerClassPart(SAMPLES_PER_CLASS_IN_GRID, "images")
        if not feature_sample:
            return fragments, grid
        features = accepted | f"FeaturePart{r}" >> FirstPerClassPart(CHUNKS * feature_sample,
                                                                      "judge_features")
        return fragments, grid, features

    parts, reports = run_rounds(p, job, handlers, consume,
                                str(progress) if progress else None, settings.accelerator)
    metrics = reports | "ComputeClassMetrics" >> ComputeClassMetrics(job.classes.num_classes)
    grid = parts[1] | "SampleGrid" >> FirstPerClass(SAMPLES_PER_CLASS_IN_GRID)
    shards = parts[0] | "Sinks" >> sinks.WriteShards(job, publish_root)
    results = {"shards": shards | "AllShards" >> sinks.all_in_one_list(),
               "totals": metrics, "grid": grid}
    if feature_sample:
        results["features"] = parts[2] | "FeatureSample" >> FirstPerClass(CHUNKS * feature_sample)
    # One element of every result, grouped, rather than side inputs (which Beam's DaskRunner
    # recomputes with everything upstream of them wherever they are read).
    _ = ([pcoll | f"Key_{name}" >> beam.Map(_keyed, name) for name, pcoll in results.items()]
         | "AllResults" >> beam.Flatten()
         | "OneGroup" >> beam.GroupByKey()
         | "Finalize" >> beam.Map(_finalize, job, bundles, publish_root, staging))


def _keyed(value, name: str):
    return None, (name, value)


def _feature_sample_size(bundles: dict) -> int:
    """M, the size of the draws of accepted samples per class whose judge features the manifold
    figures compare with the judge's bank of M real images per class; 0 without a judge bank."""
    if "judge" not in bundles:
        return 0
    from kepkreator.models.card import read_card
    card = read_card(Path(bundles["judge"]["path"]))
    return int(card.get("reference", {}).get("per_class", 0))
