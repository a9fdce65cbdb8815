"""The ``kepkreator`` command: a thin click layer over the library and the pipeline, one
module per group of commands.

Every user mistake ends as one line on stderr and exit status 2; heavy imports happen inside
commands so ``--help`` and argument errors are instant.
"""
from __future__ import annotations

from pathlib import Path

import click

from kepkreator.cli import dataset, measure, studies, text, training  # noqa: F401 (register)
from kepkreator.cli.group import cli
from kepkreator.quiet import quiet_tensorflow_import

__all__ = ["cli", "main"]


def main(argv=None, command: click.Command | None = None) -> int:
    """Entry point: one-line errors, no tracebacks for anything the user can fix. ``command``:
    another click command (a job script) run under the same rules."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.interrupt import terminate_like_ctrl_c
    quiet_tensorflow_import()
    terminate_like_ctrl_c()
    try:
        (command or cli).main(args=argv, prog_name="kepkreator", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("kepkreator: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"kepkreator: error: {exc.format_message()}", err=True)
        return 2
    except KepKreatorError as exc:
        click.echo(f"kepkreator: error: {exc}", err=True)
        return 2
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) and exc.filename and Path(exc.filename).is_file():
            reason = "a file where a folder is needed"  # mkdir's "File exists" misleads
        click.echo(f"kepkreator: error: {reason}: {exc.filename or ''}".rstrip(": "), err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("kepkreator: interrupted", err=True)
        return 130
    return 0
