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
from pipeline.build import build_pipeline, check_bundles
from pipeline.manifest import MANIFEST, manifest_bytes, package_versions
from pipeline.options import (GenerateOptions, beam_arguments, check_dask_cluster,
                              dask_cluster, parse_options, runner_for)
from pipeline.output import STAGING_PREFIX, OutputFolder
from pipeline.job import JobSpec
from pipeline.specs import load_specs, resolve

@dataclass
class JobResult:
    out: str
    metrics: dict | None
    manifest: dict | None
    failed: str = ""
    pipeline: object = None  # the beam.Pipeline, for --dry_run inspection


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
            self._show()

    def _show(self):
        accepted, generated = self.read()
        self.show(np.minimum(accepted, self.requested), self.requested, generated, self.labels)

    def __enter__(self):
        if self.show:
            self._thread.start()
        return self

    def __exit__(self, error_type, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            if error_type is None:  # the last line shows where the run ended, not a second before
                self._show()


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
    if not str(out).strip():
        raise KepKreatorError("--out is empty")
    out = str(out).rstrip("/") or "/"
    scheme = remote_scheme(out)
    if scheme not in (None, "gs"):  # Beam knows more schemes, but only gs:// is installed
        raise KepKreatorError(f"--out {out}: {scheme}:// is not supported (a local directory, "
                              "or gs://BUCKET/… on Google Cloud)")
    with dask_cluster(options) as cluster_ready:
        return _run_job(job, out, options, show_progress, note, cluster_ready)


def _run_job(job: JobSpec, out: str, options: PipelineOptions, show_progress, note,
             cluster_ready) -> JobResult:
    settings = options.view_as(GenerateOptions)
    job = resolve(job)
    bundles, generator_card = check_bundles(job)
    runner = runner_for(options)
    if options.view_as(TestOptions).dry_run:  # build and hand to the runner; touch no output
        p = beam.Pipeline(runner=runner, options=options)
        staging = fileio.join(out, STAGING_PREFIX + "dry-run")
        build_pipeline(p, job, bundles, staging, fileio.join(staging, "publish"), settings)
        p.run()
        return JobResult(out, None, None, pipeline=p)
    started, given = time.time(), beam_arguments(options)  # as given, before a cluster starts
    check_dask_cluster(options)
    with OutputFolder(out, sinks.planned_files(job), settings.overwrite, note) as folder:
        local = fileio.is_local(out)
        progress = Path(folder.staging) / "progress" if local else None
        with Progress(progress, job, show_progress if local else None):
            cluster_ready()  # the pipeline takes a copy of the options: the address goes first
            p = beam.Pipeline(runner=runner, options=options)
            build_pipeline(p, job, bundles, folder.staging, folder.publish_root, settings)
            _run_to_the_end(p)
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
                             given)
        text = manifest_bytes(manifest)
        fileio.write_bytes(folder.stage(MANIFEST), text)
        folder.publish([MANIFEST])  # last: from here on the folder is a dataset
        folder.finish()
    return JobResult(out, metrics, json.loads(text))


def _run_to_the_end(p) -> None:
    """Run ``p`` and wait for it. The runner wraps a Ctrl-C as RuntimeError("KeyboardInterrupt
    [while running 'STEP']"), which would read as a crash; a Dask run's client is closed after
    (it would otherwise outlive the cluster and log its failed reconnections), outside the block
    where a Ctrl-C is repeated, so closing it is not interrupted."""
    from kepkreator.interrupt import delivered_until_left
    result = None
    try:
        with delivered_until_left():
            result = p.run()
            result.wait_until_finish()
    except RuntimeError as exc:
        if str(exc).startswith("KeyboardInterrupt"):
            raise KeyboardInterrupt from None
        raise
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()


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
