"""Every `kepkreator …` command in the README, docs/ and jobs/*.sh uses options that exist: the
commands are what a newcomer copies, and options get renamed."""
import functools
import re

import click
import pytest

from kepkreator.cli import cli
from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "jobs").glob("*.sh")), *sorted((ROOT / "experiments").glob("*.sh"))]


def command_lines(text: str, shell: bool) -> list[str]:
    """Shell lines (continuations joined), or a Markdown file's code blocks and inline spans."""
    text = text.replace("\\\n", " ")
    if shell:
        return [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return ([line for block in blocks for line in block.splitlines()]
            + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)])


@functools.cache
def generate_options() -> set[str]:
    """generate's options are Beam pipeline options (pipeline.options.GenerateOptions)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    import pipeline.options  # noqa: F401 (registers GenerateOptions)
    beam = _BeamArgumentParser(allow_abbrev=False)
    for options in PipelineOptions.__subclasses__():
        options._add_argparse_args(beam)
    return set(beam._option_string_actions)


def unknown_options(line: str) -> list[str]:
    """'kepkreator CMD [SUB] --opt …' (or $KK, the job scripts' name for it): options CMD lacks.
    Also 'python -m pipeline.run' and the Dataflow job, which take generate's options."""
    found = []
    line = re.sub(r"python -m (pipeline\.run|jobs\.dataflow\.gpu_job)\b", "kepkreator generate",
                  line)
    for match in re.finditer(r"(?:^|[\s/(])(?:kepkreator|\$KK)\s+(.*)", line):
        words = match.group(1).split()
        if not words or words[0] not in cli.commands:
            continue
        name, command, rest = words[0], cli.commands[words[0]], words[1:]
        if isinstance(command, click.Group):
            if not rest or rest[0] not in command.commands:
                continue
            name, command, rest = f"{name} {rest[0]}", command.commands[rest[0]], rest[1:]
        known = {o for p in command.params for o in p.opts + p.secondary_opts} | {"--help"}
        if name == "generate":
            known |= generate_options()
        for word in rest:
            option = word.split("=")[0].rstrip(",;.)`")
            if not option.startswith("--") or option in known or option == "--":
                continue
            found.append(f"kepkreator {name}: {option}")
    return found


def test_the_checker_finds_a_renamed_option():
    assert unknown_options("kepkreator train gan --class-set digits --epoch 3") == [
        "kepkreator train gan: --epoch"]
    assert unknown_options("$KK downstream --settings b,d --out runs/x") == []
    assert unknown_options("kepkreator generate --spec s.yaml --out o --runner=X --outt o "
                           "--direct_num_workers=2 --max_units_per_batch 8") == [
        "kepkreator generate: --outt"]
    assert unknown_options("python -m pipeline.run --spec s --out o --temp_location gs://b/t "
                           "--tmp_location gs://b/t") == ["kepkreator generate: --tmp_location"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_commands_use_existing_options(document):
    lines = command_lines(document.read_text(), shell=document.suffix == ".sh")
    problems = [problem for line in lines for problem in unknown_options(line)]
    assert not problems, problems


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.*)$", markdown, re.M)}


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if d.suffix == ".md"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_somewhere(document):
    """The README points into docs/ for the full records; a moved section must not strand a
    link."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.is_file():
            broken.append(target)
        elif anchor and anchor not in heading_anchors(linked.read_text()):
            broken.append(target)
    assert not broken, broken


def test_anchors_follow_github():
    assert heading_anchors("## Why (e) is missed\n### Do GAN data and classic augmentation "
                           "add up?\n") == {"why-e-is-missed",
                                             "do-gan-data-and-classic-augmentation-add-up"}
