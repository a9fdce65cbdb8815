"""run(argv): the generation job. Known arguments describe the job; the rest are Beam options.

    python -m pipeline.run --spec jobs/demo/digits.yaml --out OUT [--overwrite] [beam options]

Without ``--runner`` (or with ``--runner=DirectRunner``) the job runs on Beam's FnApiRunner in
this process, or in local worker processes with ``--direct_num_workers=N
--direct_running_mode=multi_processing``; it is named explicitly because this Beam version's
DirectRunner otherwise tries to start the Prism runner, a binary it would download.
"""
from __future__ import annotations

if __name__ == "__main__":  # before the imports below load TensorFlow
    from kepkreator.quiet import quiet_tensorflow_import
    quiet_tensorflow_import()

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from kepkreator.errors import KepKreatorError
from kepkreator.faults import kill_point
from kepkreator.paths import remote_scheme
from pipeline import fileio, sinks
from pipeline.datacard import dataset_card
from pipeline.handlers import GeneratorHandler, JudgeHandler, ValidatorHandler
from pipeline.manifest import MANIFEST, manifest_bytes, package_versions
from pipeline.options import GenerateOptions, beam_arguments, parse_options, runner_for
from pipeline.output import STAGING_PREFIX, OutputFolder
from pipeline.job import JobSpec
from pipeline.specs import load_specs, resolve
from pipeline.metrics import ComputeClassMetrics, class_metrics
from pipeline.transforms import (SAMPLES_PER_CLASS_IN_GRID, FirstPerClass, FirstPerClassPart,
                                 run_rounds)

@dataclass
class JobResult:
    out: str
    metrics: dict | None
    manifest: dict | None
    failed: str = ""
    pipeline: object = None  # the beam.Pipeline, for --dry_run inspection


def check_bundles(job: JobSpec) -> tuple[dict, dict]:
    """Load both bundles once here, so a bad bundle fails before any worker starts. Returns what
    the manifest records of them and the generator's card as read now, beside its sha256, so the
    dataset card quotes the card that the sha256 names."""
    from kepkreator.models.bundle import load_bundle
    generator = load_bundle(job.generator, "generator")
    validator = load_bundle(job.validator, "validator")
    if generator.class_set != validator.class_set:
        raise KepKreatorError(f"generator class set {generator.class_set.name!r} differs from "
                              f"validator class set {validator.class_set.name!r}")
    if generator.class_set.name != job.class_set:
        raise KepKreatorError(f"spec class_set {job.class_set!r} differs from the bundles' "
                              f"{generator.class_set.name!r}")
    if job.realism is not None and validator.reference_bank() is None:
        raise KepKreatorError(f"realism needs a reference bank in the validator {job.validator} "
                              "(kepkreator reference BUNDLE --data REAL)")
    loaded = [("generator", job.generator, generator), ("validator", job.validator, validator)]
    judge = _judge(job)
    if judge is not None:
        loaded.append(("judge", job.judge, judge))
    # load_bundle verified each model file against its card's model_sha256.
    return ({kind: {"ref": ref, "path": str(b.path.resolve()), "card_sha256": b.card_sha256,
                    "model_sha256": b.card["model_sha256"], "model_verified": True,
                    "name": b.card.get("name", "")}
             for kind, ref, b in loaded}, generator.card)


def _judge(job: JobSpec):
    """The judge bundle the (resolved) spec names; None where there is none."""
    from kepkreator.models.bundle import load_bundle
    if not job.judge:
        return None
    judge = load_bundle(job.judge, "judge")
    if judge.class_set.name != job.class_set:
        raise KepKreatorError(f"judge class set {judge.class_set.name!r} differs from the spec's "
                              f"{job.class_set!r}")
    return judge


def sample_fidelity(first_features: dict, job: JobSpec, judge_path: str) -> dict | None:
    """Density and coverage (kepkreator.manifold) of the first M accepted samples of each class
    against the judge's reference bank of M real images per class, with the bank's yardstick
    (M other real images per class) beside them; None without a judge bank."""
    from kepkreator.models.bundle import load_bundle
    judge = load_bundle(judge_path, "judge")
    bank = judge.reference_bank()
    if bank is None or not first_features:
        return None
    labels = np.concatenate([[c] * len(rows) for c, rows in sorted(first_features.items())])
    features = np.stack([f for _, rows in sorted(first_features.items()) for _, f in rows])
    report = bank.density_coverage(features, labels)
    chars = job.classes.chars
    reference = judge.card["reference"]
    return {"density": report["density"], "coverage": report["coverage"],
            "samples_per_class": reference["per_class"],
            "real_vs_real": {k: reference["yardstick"][k] for k in ("density", "coverage")},
            "per_class": {chars[c]: row for c, row in report["per_class"].items()}}


def _finalize(shard_infos, totals, grid, first_features, job: JobSpec, bundles: dict,
              publish_root: str, staging: str):
    """Last pipeline step: samples.png (staged), and the metrics and shard list for run()."""
    from kepkreator.imageio import grid_png
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
    handlers = {
        "generator": GeneratorHandler(bundles["generator"]["path"], *threads, job.latent_scale),
        "validator": ValidatorHandler(bundles["validator"]["path"], *threads, job.realism,
                                      job.label_policy),
        "judge": JudgeHandler(bundles["judge"]["path"], *threads) if "judge" in bundles else None}
    feature_sample = _feature_sample_size(bundles)

    def consume(accepted, r):  # inside round r's fused stage: only small results leave it
        fragments = accepted | f"Sinks{r}" >> sinks.WriteFragments(job, staging)
        grid = accepted | f"GridPart{r}" >> FirstPerClassPart(SAMPLES_PER_CLASS_IN_GRID, "images")
        if not feature_sample:
            return fragments, grid
        features = accepted | f"FeaturePart{r}" >> FirstPerClassPart(feature_sample,
                                                                      "judge_features")
        return fragments, grid, features

    parts, reports = run_rounds(p, job, handlers, consume,
                                str(progress) if progress else None, settings.accelerator)
    metrics = reports | "ComputeClassMetrics" >> ComputeClassMetrics(job.classes.num_classes)
    grid = parts[1] | "SampleGrid" >> FirstPerClass(SAMPLES_PER_CLASS_IN_GRID)
    features = (parts[2] | "FeatureSample" >> FirstPerClass(feature_sample) if feature_sample
                else p | "NoFeatureSample" >> beam.Create([{}]))
    shards = parts[0] | "Sinks" >> sinks.WriteShards(job, publish_root)
    _ = (shards | "AllShards" >> beam.combiners.ToList()
         | "Finalize" >> beam.Map(_finalize, beam.pvalue.AsSingleton(metrics),
                                  beam.pvalue.AsSingleton(grid),
                                  beam.pvalue.AsSingleton(features), job, bundles, publish_root,
                                  staging))


def _feature_sample_size(bundles: dict) -> int:
    """M, the accepted samples per class whose judge features density and coverage compare
    with the judge's bank of M real images per class; 0 without a judge bank."""
    if "judge" not in bundles:
        return 0
    from kepkreator.models.card import read_card
    card = read_card(Path(bundles["judge"]["path"]))
    return int(card.get("reference", {}).get("per_class", 0))


class Progress:
    """Reads the workers' progress lines; calls ``show(accepted, requested, generated, labels)``."""

    def __init__(self, directory: Path, job: JobSpec, show, every: float = 1.0):
        self.directory, self.show, self.every = directory, show, every
        self.num_classes = job.classes.num_classes
        self.labels = list(job.classes.chars)
        self.requested = np.zeros(self.num_classes, np.int64)
        for c, n in job.counts.items():
            self.requested[c] = n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read(self):
        accepted, generated = np.zeros(self.num_classes, np.int64), 0
        for f in self.directory.glob("*.jsonl"):
            try:
                text = f.read_text()
            except FileNotFoundError:  # the run is over and its staging folder removed
                continue
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                accepted += row["accepted"]
                generated += row["generated"]
        return accepted, generated

    def _loop(self):
        while not self._stop.wait(self.every):
            accepted, generated = self.read()
            self.show(np.minimum(accepted, self.requested), self.requested, generated, self.labels)

    def __enter__(self):
        if self.show:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run(argv=None, show_progress=None, note=None) -> JobResult:
    """The job from command-line arguments (``generate``'s and Beam's, pipeline.options)."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    settings = options.view_as(GenerateOptions)
    for name in ("spec", "out"):
        if getattr(settings, name) is None:
            raise KepKreatorError(f"the following arguments are required: --{name}")
    return run_job(load_specs(settings.spec), settings.out, options, show_progress, note)


def run_job(job: JobSpec, out: str, options: PipelineOptions | None = None, show_progress=None,
            note=None) -> JobResult:
    """Generate ``job`` into ``out``: the function the CLI, the studies and the Dataflow job
    all call. ``options``: Beam's and the job's (``GenerateOptions``: --overwrite and the
    rest); ``show_progress(accepted, requested, generated, labels)`` is called about once a
    second on a local run, ``note`` gets notices for the user."""
    options = options or PipelineOptions([])
    settings = options.view_as(GenerateOptions)
    if not str(out).strip():
        raise KepKreatorError("--out is empty")
    out = str(out).rstrip("/") or "/"
    scheme = remote_scheme(out)
    if scheme not in (None, "gs"):  # Beam knows more schemes, but only gs:// is installed
        raise KepKreatorError(f"--out {out}: {scheme}:// is not supported (a local directory, "
                              "or gs://BUCKET/… on Google Cloud)")
    job = resolve(job)
    bundles, generator_card = check_bundles(job)
    runner = runner_for(options)
    if options.view_as(TestOptions).dry_run:  # build and hand to the runner; touch no output
        p = beam.Pipeline(runner=runner, options=options)
        staging = fileio.join(out, STAGING_PREFIX + "dry-run")
        build_pipeline(p, job, bundles, staging, fileio.join(staging, "publish"), settings)
        p.run()
        return JobResult(out, None, None, pipeline=p)
    started = time.time()
    with OutputFolder(out, sinks.planned_files(job), settings.overwrite, note) as folder:
        local = fileio.is_local(out)
        progress = Path(folder.staging) / "progress" if local else None
        with Progress(progress, job, show_progress if local else None):
            p = beam.Pipeline(runner=runner, options=options)
            build_pipeline(p, job, bundles, folder.staging, folder.publish_root, settings)
            # The runner wraps a Ctrl-C as RuntimeError("KeyboardInterrupt [while running
            # 'STEP']"), which would read as a crash.
            try:
                p.run().wait_until_finish()
            except RuntimeError as exc:
                if str(exc).startswith("KeyboardInterrupt"):
                    raise KeyboardInterrupt from None
                raise
        result = json.loads(fileio.read_bytes(fileio.join(folder.staging, "result.json")))
        seconds = time.time() - started
        metrics = _split_metrics(job, result, seconds)
        fileio.write_bytes(folder.stage("metrics.json"),
                           (json.dumps(metrics, indent=2) + "\n").encode())
        failed = _shortfall(job, metrics, settings.shortfall_tolerance)
        if failed:  # metrics.json says what fell short; no shard a reader could take as data
            folder.publish(["metrics.json"])
            folder.fail()
            return JobResult(out, metrics, None, failed)
        # Reader metadata only for a dataset that met its counts: TFDS and HF must not load a
        # failure.
        description = (f"Synthetic {job.class_set} handwriting made by KepKreator "
                       f"({metrics['accepted']} samples, policy {job.label_policy}, "
                       f"min_confidence {job.confidence_text()}).")
        card = dataset_card(job, metrics, bundles, generator_card, description)
        written = sinks.write_metadata(folder.publish_root, job, result["shards"], description,
                                       card)
        records = [name for name in ("samples.png", "metrics.json")
                   if fileio.exists(folder.stage(name))] + written
        metadata = {name: _file_record(folder.stage(name)) for name in records}
        shard_files = [info["path"] for shard in result["shards"]
                       for info in shard["files"].values()]
        kill_point("publish")
        folder.publish(shard_files + records)
        kill_point("manifest")
        manifest = _manifest(job, metrics, result["shards"], bundles, metadata, seconds,
                             beam_arguments(options))
        text = manifest_bytes(manifest)
        fileio.write_bytes(folder.stage(MANIFEST), text)
        folder.publish([MANIFEST])  # last: from here on the folder is a dataset
        folder.finish()
    return JobResult(out, metrics, json.loads(text))


def _file_record(path: str) -> dict:
    data = fileio.read_bytes(path)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _split_metrics(job: JobSpec, result: dict, seconds: float) -> dict:
    """metrics.json: the pipeline's class metrics, with what each split got."""
    metrics = result["metrics"]
    labels = list(job.classes.chars)
    got = split_counts(job, result["shards"])
    metrics["splits"] = {
        split: {"requested": int(wanted.sum()), "accepted": int(got[split].sum()),
                "shortfall": int(np.maximum(wanted - got[split], 0).sum()),
                "shards": job.shards_of(split),
                "counts": {labels[c]: int(n) for c, n in enumerate(got[split]) if n}}
        for split, wanted in job.requested_per_split().items()}
    metrics["seconds"] = round(seconds, 2)
    return metrics


def _shortfall(job: JobSpec, metrics: dict, tolerance: float) -> str:
    """Judged per split and class: a split short of a class is short even if another has
    spare. Empty when every class is within ``tolerance``."""
    labels = list(job.classes.chars)
    short = []
    for split, wanted in job.requested_per_split().items():
        counts = metrics["splits"][split]["counts"]
        short += [(split, labels[c], counts.get(labels[c], 0), int(n))
                  for c, n in enumerate(wanted)
                  if n - counts.get(labels[c], 0) > tolerance * n]
    if not short:
        return ""
    named = len(job.splits) > 1
    listing = ", ".join(f"{f'{split} ' if named else ''}{label}: {have}/{n}"
                        for split, label, have, n in short[:8])
    return (f"shortfall above tolerance in {len(short)} class(es) ({listing}); no manifest "
            "written")


def _manifest(job: JobSpec, metrics: dict, shards: list[dict], bundles: dict, metadata: dict,
              seconds: float, beam_options: list[str]) -> dict:
    labels = list(job.classes.chars)
    counts = np.sum([s["class_counts"] for s in shards], axis=0)
    return {
        "name": job.dataset_name, "class_set": job.class_set,
        "splits": {split: {"records": row["accepted"], "counts": row["counts"],
                           "shards": row["shards"]}
                   for split, row in metrics["splits"].items()},
        "spec": job.to_json(), "bundles": bundles, "seed": job.seed,
        "orientation": job.orientation, "formats": list(job.formats),
        "versions": package_versions(), "records": int(counts.sum()),
        "counts": {labels[c]: int(n) for c, n in enumerate(counts) if n},
        "shortfall": {label: row["shortfall"] for label, row in metrics["per_class"].items()
                      if row["shortfall"]},
        "shards": shards, "metadata": metadata, "seconds": round(seconds, 2),
        "beam_options": beam_options}


def split_counts(job: JobSpec, shards: list[dict]) -> dict[str, np.ndarray]:
    """Accepted samples per split and class index, from the written shards."""
    out = {split: np.zeros(job.classes.num_classes, np.int64) for split in job.split_names}
    for shard in shards:
        out[shard["split"]] += np.asarray(shard["class_counts"], np.int64)
    return out


def main(argv=None) -> None:
    """``python -m pipeline.run`` and the Dataflow job: the CLI's rules, one line and status 2
    for anything the user can fix."""
    from kepkreator.interrupt import terminate_like_ctrl_c
    terminate_like_ctrl_c()
    try:
        result = run(argv, note=lambda line: print(line, file=sys.stderr))
        failed = result.failed
    except KepKreatorError as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        print("kepkreator: aborted", file=sys.stderr)
        raise SystemExit(130) from None
    if failed:
        print(f"kepkreator: error: {failed}", file=sys.stderr)
        raise SystemExit(2)
    print(f"{result.manifest['records']} samples in {result.out}")


if __name__ == "__main__":
    main()
