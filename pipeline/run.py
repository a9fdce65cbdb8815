"""run(argv): the generation job. Known arguments describe the job; the rest are Beam options.

    python -m pipeline.run --spec jobs/demo/digits.yaml --out OUT [--overwrite] [beam options]

Without ``--runner`` (or with ``--runner=DirectRunner``) the job runs on Beam's FnApiRunner in
this process, or in local worker processes with ``--direct_num_workers=N
--direct_running_mode=multi_processing``; it is named explicitly because this Beam version's
DirectRunner otherwise tries to start the Prism runner, a binary it would download.
"""
from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions)

from kepkreator.errors import KepKreatorError
from pipeline import sinks
from pipeline.handlers import GeneratorHandler, ValidatorHandler
from pipeline.manifest import MANIFEST, package_versions, write_manifest
from pipeline.specs import JobSpec, load_specs
from pipeline.transforms import (SAMPLES_PER_CLASS_IN_GRID, ComputeClassMetrics, SampleGrid,
                                 class_metrics, run_rounds)

TMP = "_incomplete"
OUR_FILES = ("data", "features.json", "dataset_info.json", "label.labels.txt", "README.md",
             "metrics.json", "samples.png", MANIFEST, TMP)


@dataclass
class JobResult:
    out: Path
    metrics: dict
    manifest: dict | None
    failed: str = ""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kepkreator generate")
    parser.add_argument("--spec", required=True, help="spec file (YAML/JSON) or a glob of them")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing KepKreator output directory")
    parser.add_argument("--shortfall_tolerance", type=float, default=0.0,
                        help="largest tolerated shortfall per class, as a fraction of its request")
    parser.add_argument("--accelerator", default=None,
                        help="resource hint for Generate/Score, e.g. "
                             "'type:nvidia-l4;count:1;install-nvidia-driver'")
    parser.add_argument("--max_units_per_batch", type=int, default=4,
                        help="work units RunInference batches into one inference call")
    parser.add_argument("--intra_op_threads", type=int, default=0,
                        help="TensorFlow threads per worker process (0: TensorFlow decides)")
    return parser.parse_known_args(argv)


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty directory, or with --overwrite clear one that this tool made."""
    if out.exists() and not out.is_dir():
        raise KepKreatorError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise KepKreatorError(f"output directory {out} is not empty (use --overwrite)")
        foreign = [p.name for p in out.iterdir()
                   if p.name not in OUR_FILES and ".tfrecord-" not in p.name]
        if foreign:
            raise KepKreatorError(f"--overwrite refused: {out} holds files this tool did not "
                                  f"write ({', '.join(sorted(foreign)[:3])})")
        (out / MANIFEST).unlink(missing_ok=True)  # first: the old dataset stops being complete
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def pipeline_options(pipeline_args) -> tuple[PipelineOptions, object]:
    options = PipelineOptions(pipeline_args)
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return options, FnApiRunner()
    return options, runner


def check_bundles(job: JobSpec) -> dict:
    """Load both bundles once here, so a bad bundle fails before any worker starts."""
    from kepkreator.models.bundle import load_bundle
    generator = load_bundle(job.generator, "generator")
    validator = load_bundle(job.validator, "validator")
    if generator.class_set != validator.class_set:
        raise KepKreatorError(f"generator class set {generator.class_set.name!r} differs from "
                              f"validator class set {validator.class_set.name!r}")
    if generator.class_set.name != job.class_set:
        raise KepKreatorError(f"spec class_set {job.class_set!r} differs from the bundles' "
                              f"{generator.class_set.name!r}")
    return {kind: {"ref": ref, "path": str(b.path.resolve()), "card_sha256": b.card_sha256,
                   "name": b.card.get("name", "")}
            for kind, ref, b in (("generator", job.generator, generator),
                                 ("validator", job.validator, validator))}


def _finalize(shard_infos, metrics_acc, grid, job: JobSpec, out: str, tmp: str):
    """Last pipeline step: metrics.json, samples.png, TFDS/HF metadata, a result for run()."""
    from kepkreator.training.common import save_grid
    out_path = Path(out)
    metrics = class_metrics(metrics_acc, list(job.classes.chars))
    (out_path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rows = [c for c in range(job.classes.num_classes) if c in grid]
    if rows:
        width = SAMPLES_PER_CLASS_IN_GRID
        images = np.zeros((len(rows) * width, 28, 28), np.uint8)
        for r, c in enumerate(rows):
            for i, (_, image) in enumerate(grid[c]):
                images[r * width + i] = image.T if job.orientation == "emnist" else image
        save_grid(out_path / "samples.png", images, len(rows))
    result = {"metrics": metrics, "shards": [
        {"index": s.index, "records": s.rows, "class_counts": s.class_counts, "files": s.files}
        for s in sorted(shard_infos, key=lambda s: s.index)]}
    (Path(tmp) / "result.json").write_text(json.dumps(result))


def build_pipeline(p, job: JobSpec, bundles: dict, out: Path, known) -> None:
    tmp = out / TMP
    progress = tmp / "progress"
    progress.mkdir(parents=True, exist_ok=True)
    generator = GeneratorHandler(bundles["generator"]["path"], known.max_units_per_batch,
                                 known.intra_op_threads)
    validator = ValidatorHandler(bundles["validator"]["path"], known.max_units_per_batch,
                                 known.intra_op_threads)
    accepted, reports = run_rounds(p, job, generator, validator, str(progress), known.accelerator)
    metrics = reports | "ComputeClassMetrics" >> ComputeClassMetrics(job.classes.num_classes)
    grid = accepted | "SampleGrid" >> SampleGrid()
    shards = accepted | "Sinks" >> sinks.WriteShards(job, str(out), str(tmp))
    _ = (shards | "AllShards" >> beam.combiners.ToList()
         | "Finalize" >> beam.Map(_finalize, beam.pvalue.AsSingleton(metrics),
                                  beam.pvalue.AsSingleton(grid), job, str(out), str(tmp)))


class Progress:
    """Reads the workers' progress lines and calls ``show(accepted_per_class, generated)``."""

    def __init__(self, directory: Path, num_classes: int, show, every: float = 1.0):
        self.directory, self.num_classes, self.show, self.every = directory, num_classes, show, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read(self):
        accepted, generated = np.zeros(self.num_classes, np.int64), 0
        for f in self.directory.glob("*.jsonl"):
            for line in f.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                accepted += row["accepted"]
                generated += row["generated"]
        return accepted, generated

    def _loop(self):
        while not self._stop.wait(self.every):
            self.show(*self.read())

    def __enter__(self):
        if self.show:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run(argv=None, show_progress=None) -> JobResult:
    known, pipeline_args = parse_args(argv)
    job = load_specs(known.spec)
    out = Path(known.out)
    bundles = check_bundles(job)
    prepare_output(out, known.overwrite)
    options, runner = pipeline_options(pipeline_args)
    started = time.time()
    try:
        with Progress(out / TMP / "progress", job.classes.num_classes, show_progress):
            p = beam.Pipeline(runner=runner, options=options)
            build_pipeline(p, job, bundles, out, known)
            p.run().wait_until_finish()
        result = json.loads((out / TMP / "result.json").read_text())
    except BaseException:
        shutil.rmtree(out / TMP, ignore_errors=True)
        raise
    seconds = time.time() - started
    metrics = result["metrics"]
    metrics["seconds"] = round(seconds, 2)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(out / TMP, ignore_errors=True)

    short = {label: row["shortfall"] for label, row in metrics["per_class"].items()
             if row["shortfall"] > known.shortfall_tolerance * row["requested"]}
    if short:
        listing = ", ".join(f"{label}: {metrics['per_class'][label]['accepted']}/"
                            f"{metrics['per_class'][label]['requested']}"
                            for label in list(short)[:8])
        return JobResult(out, metrics, None,
                         f"shortfall above tolerance in {len(short)} class(es) ({listing}); "
                         f"no manifest written")
    # Reader metadata only for a dataset that met its counts: TFDS and HF must not load a failure.
    description = (f"Synthetic {job.class_set} handwriting made by KepKreator "
                   f"({metrics['accepted']} samples, policy {job.label_policy}, "
                   f"min_confidence {job.min_confidence}).")
    sinks.write_metadata(out, job, result["shards"], description)
    labels = list(job.classes.chars)
    counts = np.sum([s["class_counts"] for s in result["shards"]], axis=0)
    manifest = write_manifest(out, {
        "name": job.dataset_name, "class_set": job.class_set, "split": job.split,
        "spec": job.to_json(), "bundles": bundles, "seed": job.seed,
        "orientation": job.orientation, "formats": list(job.formats),
        "versions": package_versions(), "records": int(counts.sum()),
        "counts": {labels[c]: int(n) for c, n in enumerate(counts) if n},
        "shortfall": {label: row["shortfall"] for label, row in metrics["per_class"].items()
                      if row["shortfall"]},
        "shards": result["shards"], "seconds": round(seconds, 2),
        "beam_options": list(pipeline_args)})
    return JobResult(out, metrics, json.loads(manifest.read_text()))


def main(argv=None):
    result = run(argv)
    if result.failed:
        raise SystemExit(f"kepkreator: error: {result.failed}")
    print(f"{result.manifest['records']} samples in {result.out}")


if __name__ == "__main__":
    main()
