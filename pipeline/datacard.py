"""The dataset's README.md: a Hugging Face dataset card a reader can trust without our code.

Whoever trains on the data needs to know what made it (which weights, which filter), what it
holds per class, what the filter cost, and what the generator's own card measured about the
data's worth — so the card says it, from the run's metrics and the bundles' cards.
"""
from __future__ import annotations

import numpy as np

from kepkreator.data.schema import FEATURES
from kepkreator.manifold import draws_text, figures_text
from pipeline.job import JobSpec

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"))


def size_category(records: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if records < bound), "100M<n<1B")


def _percent(x, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def generator_evidence(card: dict) -> list[str]:
    """What the generator's card measured about its data's worth, in a sentence each."""
    metrics = card.get("metrics") or {}
    lines = []
    settings = (metrics.get("downstream") or {}).get("settings") or {}
    if {"a", "b"} <= settings.keys():
        a, b = settings["a"], settings["b"]
        lines.append(
            f"Classification Accuracy Score: a reference classifier trained on "
            f"{b['train_samples']:,} filtered samples of this generator scores "
            f"{_percent(b['accuracy_mean'], 2)} on real test data, against "
            f"{_percent(a['accuracy_mean'], 2)} when trained on as many real images "
            f"(`kepkreator downstream`, {b.get('seeds', 1)} seeds).")
    copying = (metrics.get("evaluation") or {}).get("copying")
    if copying and copying.get("distance_ratio") is not None:
        lines.append(
            f"Copying check: samples lie {copying['distance_ratio']:.2f}× as far from their "
            f"nearest training image as held-out real images do; "
            f"{_percent(copying['near_copies'])} are near copies "
            f"({_percent(copying['near_copies_expected'])} by chance).")
    return lines


def _splits_line(job: JobSpec, metrics: dict) -> str:
    splits, formats = metrics["splits"], ", ".join(job.formats)
    shards = lambda n: f"{n} shard{'s' if n != 1 else ''}"
    if len(splits) == 1:
        (name, row), = splits.items()
        return f"split `{name}`, {shards(row['shards'])} per format ({formats})"
    parts = ", ".join(f"`{name}` ({row['accepted']:,} samples, {shards(row['shards'])})"
                      for name, row in splits.items())
    return (f"splits {parts}, shards per format ({formats}). Each split was drawn from seeds "
            "of its own, so no sample is in two splits, and holds the classes in the "
            "proportions asked for")


def quality_lines(metrics: dict, bundles: dict) -> list[str]:
    """What an independent check says of the samples: the judge (a second classifier that never
    filters) and density / coverage against real images. The validator's agreement with what
    it kept itself is true by construction, so it is not offered."""
    lines = []
    judge = metrics.get("judge")
    if judge:
        lines.append(f"An independent judge (`{bundles['judge']['ref']}`, a classifier trained "
                     "apart from the validator; it never filters) agrees with "
                     f"{_percent(judge['agreement_accepted'], 2)} of the labels kept "
                     f"({_percent(judge['agreement_generated'], 2)} of all candidates).")
    fidelity = metrics.get("fidelity")
    if fidelity:
        real = fidelity["real_vs_real"]
        lines.append(f"Fidelity and diversity in the judge's features, against real images "
                     f"({draws_text(fidelity)}; precision and recall: "
                     f"Kynkäänniemi et al. 2019, density and coverage: Naeem et al. 2020): "
                     f"{figures_text(fidelity, ', ')}; other real images score "
                     f"{figures_text(real, ', ')}.")
    if not lines:
        lines.append("No independent judge measured these samples (the spec's `judge: none`, "
                     "or no judge is shipped for the class set).")
    return lines


def dataset_card(job: JobSpec, metrics: dict, bundles: dict, generator_card: dict,
                 description: str) -> str:
    records = metrics["accepted"]
    front = ["---"]
    if "parquet" in job.formats:  # what `datasets.load_dataset(directory)` reads
        front += ["configs:", "- config_name: default", "  data_files:"]
        for split in job.split_names:
            front += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    front += [f"pretty_name: {job.dataset_name}", "task_categories:", "- image-classification",
             "tags:", "- synthetic", "- handwriting", "size_categories:",
             f"- {size_category(records)}", "---", ""]
    orientation = ("upright" if job.orientation == "upright"
                   else "transposed like the EMNIST files (transpose to read upright)")
    body = [f"# {job.dataset_name}", "", description, "",
            "## Contents", "",
            f"{records:,} samples of class set `{job.class_set}` in {_splits_line(job, metrics)}."
            " The classes are "
            "mixed at every scale: each shard holds them in the proportions requested, its rows "
            "in random class order, so one shard or the first rows already show every class.",
            "",
            "| column | meaning |", "|---|---|"]
    meaning = {"image": f"28×28 grayscale PNG, white ink on black, {orientation}",
               "label": "class index (a `ClassLabel`; names in order: "
                        f"`{''.join(job.classes.chars)}`)"}
    body += [f"| {f.name} | {meaning.get(f.name, f.doc)} |" for f in FEATURES] + [""]
    body += ["## How it was made", "",
             "| | |", "|---|---|"]
    for kind in ("generator", "validator", "second_validator", "judge"):
        if kind in bundles:
            b = bundles[kind]
            body.append(f"| {kind.replace('_', ' ')} | `{b['ref']}` ({b['name'] or 'unnamed'}; "
                        f"model sha256 `{b['model_sha256'][:16]}…`, verified) |")
    realism = ("off" if job.realism is None else
               f"within {job.realism:g} × a real image's k-NN radius (validator features)")
    second = ("; the second validator as sure of the same label" if job.second_validator
              else "")
    body += [f"| latent scale | z ~ N(0, {job.latent_scale:g}²) |",
             f"| filter | `{job.label_policy}`, validator confidence ≥ {job.confidence_text()}"
             f"{second}; realism {realism} |",
             f"| seed | {job.seed} |", ""]
    if job.label_policy == "relabel":
        provenance = "Every label is the validator's reading of its sample"
    elif (job.thresholds() > 0).all():
        provenance = ("Every label was requested from the generator and confirmed by the validator"
                      + (" and the second validator" if job.second_validator else ""))
    elif (job.thresholds() > 0).any():
        unfiltered = "".join(job.classes.chars[c] for c in np.flatnonzero(job.thresholds() <= 0))
        provenance = ("The filter was off for classes " + unfiltered + ": their labels are the "
                      "ones requested from the generator; every other label was confirmed by "
                      "the validator")
    else:
        provenance = "The filter was off: every label is the one requested from the generator"
    body += [f"{provenance} (`manifest.json` has the full spec, package versions and every "
             "shard's sha256; `kepkreator inspect` re-verifies them).", ""]
    splits = metrics["splits"] if len(metrics["splits"]) > 1 else {}
    judged = "judge" in metrics
    body += ["| class | samples | " + "".join(f"{name} | " for name in splits)
             + "generated | passed the filter | mean confidence |"
             + (" judge agrees (generated → kept) |" if judged else ""),
             "|---|---|" + "---|" * len(splits) + "---|---|---|" + ("---|" if judged else "")]
    for label, row in metrics["per_class"].items():
        if row["requested"] or row["accepted"]:
            body.append(f"| {label} | {row['accepted']:,} | "
                        + "".join(f"{split['counts'].get(label, 0):,} | "
                                  for split in splits.values())
                        + f"{row['generated']:,} | {_percent(row.get('acceptance_rate'))} | "
                        f"{row.get('mean_confidence_accepted') or 0:.3f} |"
                        + (f" {_percent(row['judge_agreement_generated'], 2)} → "
                           f"{_percent(row['judge_agreement_accepted'], 2)} |" if judged else ""))
    body += [""] + quality_lines(metrics, bundles) + [""]
    evidence = generator_evidence(generator_card)
    if evidence:
        body += ["## What the generator's card measured", ""] + [f"- {line}" for line in evidence]
        body.append("")
    body += ["## Load it", "", "```python"]
    if "parquet" in job.formats:
        body += ["from datasets import load_dataset  # Hugging Face",
                 f'ds = load_dataset("path/to/this/directory", split="{job.split_names[0]}")', "",
                 "import pandas as pd",
                 'frame = pd.read_parquet("path/to/this/directory/data")'
                 + ("" if len(job.splits) == 1 else
                    f'  # every split; one: data/{job.split_names[0]}-*.parquet')]
    if "tfrecord" in job.formats:
        body += ["", "import tensorflow_datasets as tfds",
                 'builder = tfds.builder_from_directory("path/to/this/directory")',
                 f'ds = builder.as_dataset(split="{job.split_names[0]}", as_supervised=True)']
    body += ["```", "", "## Limitations", "",
             "Synthetic data from one generator, kept where one validator was confident: styles "
             "the generator rarely draws or the validator doubts are under-represented, and "
             "the validator's mistakes pass through. Measure what it adds on real data "
             "(`kepkreator downstream`; KepKreator's README, *Is the data worth training on?*, "
             "has where it helps and where classic augmentation does more).", ""]
    return "\n".join(front + body)
