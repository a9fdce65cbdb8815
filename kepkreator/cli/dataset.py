"""``generate`` (the pipeline) and ``inspect`` (verify a dataset folder)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from kepkreator.cli.group import cli
from kepkreator.cli.options import LocalPath
from kepkreator.manifold import draws_text, figures_text


@cli.command(add_help_option=False, context_settings={"ignore_unknown_options": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def generate(arguments):
    """Run the generation pipeline on a spec (--help lists its options and the spec keys)."""
    from kepkreator.errors import KepKreatorError
    from pipeline.options import generate_help
    from pipeline.run import run
    if "--help" in arguments or "-h" in arguments:
        click.echo(generate_help())
        return
    result = run(list(arguments), show_progress=_progress_printer(),
                 note=lambda line: click.echo(line, err=True))
    if result.metrics is None:  # --dry_run: the runner got the pipeline, nothing ran
        click.echo(f"dry run: pipeline built for {result.out}; nothing was run or written")
        return
    click.echo("", err=True)
    click.echo(_summary_table(result.metrics, result.manifest["spec"] if result.manifest else None))
    if result.failed:
        raise KepKreatorError(result.failed)
    splits = result.manifest["splits"]
    per_split = ("" if len(splits) == 1 else
                 ": " + ", ".join(f"{name} {row['records']}" for name, row in splits.items()))
    click.echo(f"dataset: {result.out} ({result.manifest['records']} samples{per_split}, "
               f"{len(result.manifest['shards'])} shards, {result.metrics['seconds']:.1f} s)")


def _progress_printer():
    """accepted/requested overall, the rate and time left, and the classes furthest behind; a
    live line on a terminal, a line every 15 s otherwise."""
    import time
    tty = sys.stderr.isatty()
    state = {"last": 0.0, "start": time.time()}

    def show(accepted, requested, generated, labels):
        now = time.time()
        done, total = int(accepted.sum()), int(requested.sum())
        finished = done == total
        if (not generated or state.get("finished")
                or (not tty and now - state["last"] < 15 and not finished)):
            return
        state["last"], state["finished"] = now, finished
        wanted = [c for c in range(len(requested)) if requested[c]]
        behind = sorted(wanted, key=lambda c: accepted[c] / requested[c])[:4]
        rate = done / max(now - state["start"], 1e-9)
        left = f"{(total - done) / rate:,.0f} s left" if rate > 0 else "-"
        line = (f"accepted {done:,}/{total:,} ({int(generated):,} generated; {rate:,.0f}/s, "
                f"{left})  "
                + " ".join(f"{labels[c]}:{int(accepted[c])}/{int(requested[c])}" for c in behind))
        if tty:
            click.echo("\r" + line.ljust(100), nl=False, err=True)
        else:
            click.echo(line, err=True)
    return show


def _filters_line(metrics: dict, spec: dict) -> str | None:
    """How many candidates each filter that is on passed alone, where more than one is on."""
    on = [("confidence", "passed_confidence")]
    if spec.get("realism", "off") != "off":
        on.append(("realism", "passed_realism"))
    if spec.get("second_validator", "none") != "none":
        on.append(("second validator", "passed_second_validator"))
    generated = max(metrics["generated"], 1)
    if len(on) < 2 or any(key not in metrics for _, key in on):
        return None
    return ("each filter alone passed: " + ", ".join(
        f"{name} {100 * metrics[key] / generated:.1f}%" for name, key in on)
        + f"; all of them {100 * metrics['passed_filter'] / generated:.1f}%")


def _summary_table(metrics: dict, spec: dict | None = None) -> str:
    judged = "judge" in metrics
    lines = [f"{'class':>5} {'requested':>10} {'accepted':>10} {'generated':>10} "
             f"{'passed%':>8} {'conf':>6}" + (f" {'judge:gen':>9} {'kept':>7}" if judged else "")]
    percent = lambda x: f"{100 * x:.2f}%" if x is not None else "-"
    for label, row in metrics["per_class"].items():
        rate = row["acceptance_rate"]
        conf = row["mean_confidence_accepted"]
        lines.append(f"{label:>5} {row['requested']:>10,} {row['accepted']:>10,} "
                     f"{row['generated']:>10,} {100 * rate if rate is not None else 0:>7.1f}% "
                     f"{conf if conf is not None else 0:>6.3f}"
                     + (f" {percent(row['judge_agreement_generated']):>9} "
                        f"{percent(row['judge_agreement_accepted']):>7}" if judged else ""))
    lines.append(f"{'all':>5} {metrics['requested']:>10,} {metrics['accepted']:>10,} "
                 f"{metrics['generated']:>10,} "
                 f"{100 * metrics['passed_filter'] / max(metrics['generated'], 1):>7.1f}%"
                 + (f" {'':>6} {percent(metrics['judge']['agreement_generated']):>9} "
                    f"{percent(metrics['judge']['agreement_accepted']):>7}" if judged else ""))
    filters = _filters_line(metrics, spec or {})
    if filters:
        lines.append(filters)
    m = metrics["generated_samples"]
    if m["samples"]:
        lines.append(f"validator on all candidates: agreement {m['agreement']:.4f}  "
                     f"BCIS {m['bcis']:.3f}  WCIS {m['wcis']:.3f}")
    if judged:
        lines.append(f"independent judge agrees with {percent(metrics['judge']['agreement_accepted'])}"
                     f" of the kept labels ({percent(metrics['judge']['agreement_generated'])} of "
                     "all candidates)")
    fidelity = metrics.get("fidelity")
    if fidelity:
        real = fidelity["real_vs_real"]
        lines.append(f"kept vs real (judge features, {draws_text(fidelity)}): "
                     f"{figures_text(fidelity)}")
        lines.append(f"real vs real (as many other real images): {figures_text(real)}")
    return "\n".join(lines)


@cli.command()
@click.argument("directory", type=LocalPath())
def inspect(directory):
    """Verify a dataset folder against its manifest (every listed file's sha256, nothing
    unlisted), then show its counts and metrics."""
    from kepkreator.data.generated import verify_folder
    from kepkreator.errors import DataError, KepKreatorError
    manifest, problems = verify_folder(Path(directory))
    if problems:
        raise KepKreatorError(f"{directory} does not verify: {len(problems)} problem(s): "
                              f"{'; '.join(problems[:5])}")
    splits = manifest["splits"]
    named = ", ".join(f"{split} {row['records']:,}" if len(splits) > 1 else split
                      for split, row in splits.items())
    click.echo(f"{manifest['name']} ({manifest['class_set']}, split{'s' * (len(splits) > 1)} "
               f"{named}): {manifest['records']:,} samples in {len(manifest['shards'])} shards, "
               f"formats {', '.join(manifest['formats'])}")
    click.echo("counts: " + ", ".join(f"{k}={v}" for k, v in manifest["counts"].items()))
    if "metrics.json" in manifest["metadata"]:
        try:
            click.echo(_summary_table(json.loads((Path(directory) / "metrics.json").read_text()),
                                      manifest.get("spec")))
        except (ValueError, KeyError, TypeError) as exc:  # checksummed, so written so by us
            raise DataError(f"{directory}/metrics.json is not a metrics file: {exc}") from None
    files = sum(len(s["files"]) for s in manifest["shards"]) + len(manifest["metadata"])
    click.echo(f"verified: {files} files match their sha256 in manifest.json "
               f"({sum(len(s['files']) for s in manifest['shards'])} shards, "
               f"{len(manifest['metadata'])} metadata); no other file in the folder")
