"""Sinks: Parquet (Hugging Face layout) and TFRecord (TFDS layout), with the metadata readers need.

Writing happens in two parallel steps so the shards are byte-identical however the runner
bundles and orders the work: every accepted unit is first written as its own small Parquet
fragment (PNG-encoded once); then a plan cuts the fragments, in a fixed global order, into
``shards`` row-balanced ranges, and each shard is written by its own worker into both formats.
Every unit holds every class in proportion, in random order (``specs.candidate_labels``), so
every shard, and every stretch of one, mixes the classes. Memory stays at one unit and one
fragment at a time.

Layout of an output directory::

    data/<split>-00000-of-00004.parquet       Hugging Face: image {bytes, path}, label ClassLabel
    <name>-<split>.tfrecord-00000-of-00004     TFDS: tf.train.Example {image: PNG, label: int64}
                                               (one set of shards per split of the spec)
    features.json, dataset_info.json, label.labels.txt   so tfds.builder_from_directory(out) works
    README.md                                  dataset card: what made the data, per-class counts,
                                               how to load it; its YAML points HF at data/
    metrics.json, samples.png, manifest.json (written last, by run())
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kepkreator.data.schema import FEATURES, example_bytes, parquet_schema, tfds_features
from kepkreator.faults import kill_point
from kepkreator.imageio import encode_png_batch
from pipeline import fileio
from pipeline.job import JobSpec
from pipeline.transforms import AcceptedBatch

TFRECORD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
FRAGMENTS = "fragments"


def parquet_name(split: str, shard: int, shards: int) -> str:
    return f"data/{split}-{shard:05d}-of-{shards:05d}.parquet"


def tfrecord_name(name: str, split: str, shard: int, shards: int) -> str:
    return f"{name}-{split}.tfrecord-{shard:05d}-of-{shards:05d}"


@dataclass
class Fragment:
    path: str
    order_key: tuple
    rows: int
    split: str = "train"


@dataclass
class ShardInfo:
    split: str
    index: int
    rows: int
    class_counts: list[int]
    files: dict  # format -> {"path": relative path, "sha256": ..., "bytes": ...}


class _WriteFragmentDoFn(beam.DoFn):
    def __init__(self, job: JobSpec, tmp_dir: str):
        self.job, self.tmp_dir = job, tmp_dir

    def setup(self):
        self.labels = list(self.job.classes.chars)
        self.label_names = np.asarray(self.labels, dtype=object)
        self.schema = parquet_schema(self.labels)

    def process(self, batch: AcceptedBatch):
        images = batch.images
        if self.job.orientation == "emnist":
            images = np.ascontiguousarray(images.transpose(0, 2, 1))
        pngs = encode_png_batch(images)
        columns = {
            "image": pa.StructArray.from_arrays([pa.array(pngs, pa.binary()),
                                                 pa.nulls(len(pngs), pa.string())],
                                                ["bytes", "path"]),
            "label": pa.array(batch.labels, pa.int64()),
            "label_name": pa.array(self.label_names[batch.labels], pa.string()),
            "confidence": pa.array(batch.confidence, pa.float32()),
            "sample_id": pa.array(batch.sample_ids(), pa.string()),
            "split": pa.array([batch.split] * len(pngs), pa.string())}
        table = pa.Table.from_arrays([columns[f.name] for f in FEATURES], schema=self.schema)
        path = fileio.join(self.tmp_dir, FRAGMENTS, f"{batch.unit_id}-r{batch.round}.parquet")
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="none")
        fileio.write_bytes(path, buffer.getvalue())  # whole or not at all: a retry rewrites it
        yield Fragment(path, batch.order_key, len(pngs), batch.split)


def plan_shards(fragments: list[Fragment], shards: int) -> list[list[tuple[str, int, int]]]:
    """Cut the fragments, in global order, into ``shards`` row ranges of (almost) equal size.

    One forward walk over fragments and shard bounds together: O(fragments + shards).
    """
    ordered = sorted(fragments, key=lambda f: f.order_key)
    total = sum(f.rows for f in ordered)
    bounds = [total * s // shards for s in range(shards + 1)]
    plans, start, shard = [[] for _ in range(shards)], 0, 0
    for fragment in ordered:
        end = start + fragment.rows
        while shard < shards - 1 and bounds[shard + 1] <= start:
            shard += 1
        s = shard
        while s < shards and bounds[s] < end:
            lo, hi = max(start, bounds[s]), min(end, bounds[s + 1])
            if lo < hi:
                plans[s].append((fragment.path, lo - start, hi - start))
            s += 1
        start = end
    return plans


class _WriteShardDoFn(beam.DoFn):
    def __init__(self, job: JobSpec, out_dir: str):
        self.job, self.out_dir = job, out_dir

    def process(self, element):
        split, index, ranges = element
        job = self.job
        shards, num_classes = job.shards_of(split), job.classes.num_classes
        files, counts, rows, writers = {}, np.zeros(num_classes, np.int64), 0, {}
        if "parquet" in job.formats:
            files["parquet"] = parquet_name(split, index, shards)
            writers["parquet"] = fileio.HashingWriter(fileio.join(self.out_dir, files["parquet"]))
            parquet = pq.ParquetWriter(writers["parquet"], parquet_schema(list(job.classes.chars)),
                                       compression="none")
        if "tfrecord" in job.formats:
            files["tfrecord"] = tfrecord_name(job.dataset_name, split, index, shards)
            writers["tfrecord"] = fileio.HashingWriter(fileio.join(self.out_dir, files["tfrecord"]))
        for path, lo, hi in ranges:
            table = pq.read_table(pa.BufferReader(fileio.read_bytes(path))).slice(lo, hi - lo)
            labels = table.column("label").to_numpy()
            counts += np.bincount(labels, minlength=num_classes)
            rows += table.num_rows
            if "parquet" in writers:
                parquet.write_table(table)
            if "tfrecord" in writers:
                pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
                writers["tfrecord"].write(b"".join(
                    fileio.tfrecord_frame(example_bytes({"image": png, "label": label}))
                    for png, label in zip(pngs, labels.tolist())))
            kill_point("shard")  # files half written
        if "parquet" in writers:
            parquet.close()
        for writer in writers.values():
            writer.close()
        yield ShardInfo(split, index, rows, counts.tolist(), {
            fmt: {"path": files[fmt], "sha256": w.sha256, "bytes": w.bytes}
            for fmt, w in writers.items()})


class WriteFragments(beam.PTransform):
    """AcceptedBatch -> one Parquet fragment each (PNG-encoded once) -> small Fragment records."""

    def __init__(self, job: JobSpec, tmp_dir: str):
        super().__init__()
        self.job, self.tmp_dir = job, tmp_dir

    def expand(self, accepted):
        return accepted | "WriteFragment" >> beam.ParDo(_WriteFragmentDoFn(self.job, self.tmp_dir))


def plan_split_shards(fragments: list[Fragment], job: JobSpec):
    """(split, shard index, ranges) for every shard of every split."""
    for split in job.split_names:
        mine = [f for f in fragments if f.split == split]
        for index, ranges in enumerate(plan_shards(mine, job.shards_of(split))):
            yield split, index, ranges


def all_in_one_list():
    """``beam.combiners.ToList`` without its default: that is injected as a side input, which
    Beam's DaskRunner recomputes from scratch wherever it is read. An empty input gives no
    list."""
    return beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()


def _by_shard(plan):
    split, index, _ = plan
    return (split, index), plan


def _plans_of(grouped):
    return [plan for plan in grouped[1] if plan is not None]


class SpreadShards(beam.PTransform):
    """Shard plans -> the same plans, spread over the workers. A GroupByKey by shard rather than
    Reshuffle, which Beam's DaskRunner runs as a no-op: after the one global plan every shard
    would be written by one task in turn. An empty slot per planned shard, from a Create, gives
    the grouping as many input partitions as the runner gives a Create."""

    def __init__(self, job: JobSpec):
        super().__init__()
        self.job = job

    def expand(self, plans):
        slots = [((split, index), None) for split in self.job.split_names
                 for index in range(self.job.shards_of(split))]
        return ((plans | "KeyByShard" >> beam.Map(_by_shard),
                 plans.pipeline | "ShardSlots" >> beam.Create(slots))
                | "PlansAndSlots" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "Plans" >> beam.FlatMap(_plans_of))


class WriteShards(beam.PTransform):
    """Fragments -> planned shards, each written by its own worker in every requested format."""

    def __init__(self, job: JobSpec, out_dir: str):
        super().__init__()
        self.job, self.out_dir = job, out_dir

    def expand(self, fragments):
        job = self.job
        return (fragments
                | "AllFragments" >> all_in_one_list()
                | "PlanShards" >> beam.FlatMap(lambda frags: plan_split_shards(frags, job))
                | "SpreadShards" >> SpreadShards(job)
                | "WriteShard" >> beam.ParDo(_WriteShardDoFn(self.job, self.out_dir)))


def shards_by_split(job: JobSpec, shards: list[dict]) -> dict[str, list[dict]]:
    """The shard records of each split, in the spec's split order and shard order."""
    return {split: sorted((s for s in shards if s["split"] == split), key=lambda s: s["index"])
            for split in job.split_names}


READER_METADATA = ("features.json", "dataset_info.json", "label.labels.txt", "README.md")
RUN_RECORDS = ("metrics.json", "samples.png")


def planned_files(job: JobSpec) -> list[str]:
    """Every file a run of ``job`` may publish (relative to its output folder), known before it
    starts: the run marker lists them, so --overwrite can later remove exactly these."""
    names = []
    for split in job.split_names:
        shards = job.shards_of(split)
        for index in range(shards):
            if "parquet" in job.formats:
                names.append(parquet_name(split, index, shards))
            if "tfrecord" in job.formats:
                names.append(tfrecord_name(job.dataset_name, split, index, shards))
    return names + list(READER_METADATA) + list(RUN_RECORDS)


def write_metadata(out: str, job: JobSpec, shards: list[dict], description: str,
                   card: str) -> list[str]:
    """TFDS features.json / dataset_info.json / label.labels.txt and the HF dataset card
    (``card``: its text; with Parquet, its YAML must point at data/). Returns the names."""
    labels = list(job.classes.chars)
    written = []

    def write(name, text):
        fileio.write_bytes(fileio.join(out, name), text.encode())
        written.append(name)

    if "tfrecord" in job.formats:
        write("features.json", json.dumps(tfds_features(len(labels)), indent=2))
        write("label.labels.txt", "\n".join(labels) + "\n")
        info = {"name": job.dataset_name, "version": "1.0.0", "fileFormat": "tfrecord",
                "moduleName": "kepkreator", "description": description,
                "splits": [{"name": split, "filepathTemplate": TFRECORD_TEMPLATE,
                            "numBytes": str(sum(s["files"]["tfrecord"]["bytes"] for s in mine)),
                            "shardLengths": [str(s["records"]) for s in mine]}
                           for split, mine in shards_by_split(job, shards).items()],
                "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"},
                                                       {"featureKey": "label"}]}}}
        write("dataset_info.json", json.dumps(info, indent=2))
    write("README.md", card)
    return written
