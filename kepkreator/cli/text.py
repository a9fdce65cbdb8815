"""``render`` and ``serve``: handwritten text as a PNG, an HTTP API and a page."""
from __future__ import annotations

from pathlib import Path

import click

from kepkreator.cli.group import cli
from kepkreator.cli.options import (SEED, LocalPath, check_report_path, with_options,
                                    write_report)


MODEL_OPTIONS = [
    click.option("--digits", "digits_refs", default="default:digits,default:digits",
                 show_default=True, help="generator,validator bundles for digits ('' = none)."),
    click.option("--letters", "letters_refs", default="default:letters,default:letters",
                 show_default=True, help="generator,validator bundles for letters ('' = none)."),
    click.option("--case-validator", "case_ref", default="default:letters52", show_default=True,
                 help="Case-sensitive validator that picks, for a case-merged letters "
                      "generator, a candidate in the typed case ('' = either case)."),
]


def _renderer(digits_refs: str, letters_refs: str, case_ref: str):
    from kepkreator.errors import KepKreatorError
    from kepkreator.handwriting import TextRenderer
    roles = [(option, refs.split(","), kind) for option, refs, kind in (
        ("--digits", digits_refs, str.isdigit), ("--letters", letters_refs, str.isalpha)) if refs]
    if not roles or any(len(pair) != 2 for _, pair, _ in roles):
        raise click.BadParameter("give generator,validator bundle pairs",
                                 param_hint="--digits/--letters")
    renderer = TextRenderer([pair[0] for _, pair, _ in roles], [pair[1] for _, pair, _ in roles],
                            case_ref or None)
    # Each pair must write what its option names: a letters pair given as --digits would be
    # taken, and the digits then be "not in the loaded class sets".
    for (option, pair, kind), (generator, _) in zip(roles, renderer.models):
        if not any(kind(ch) for ch in generator.class_set.chars):
            raise KepKreatorError(f"{option} {pair[0]} is a {generator.class_set.name!r} "
                                  f"generator: it writes no {option[2:]}")
    return renderer


@cli.command()
@click.argument("text")
@click.option("-o", "--out", required=True, type=LocalPath(dir_okay=False), help="PNG to write.")
@click.option("--best-of", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Candidates per character; the validator's most confident one is kept "
                   "(more, up to 64, for a letter whose kept candidate is not surely, P >= 0.9, "
                   "in the typed case).")
@click.option("--seed", type=SEED, default=None, help="Same seed, same picture.")
@click.option("--scale", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--json-out", type=LocalPath(dir_okay=False), default=None,
              help="Also write each character's class, confidences and box [x, y, width, "
                   "height] in the PNG's pixels: the line as labelled data.")
@with_options(MODEL_OPTIONS)
def render(text, out, best_of, seed, scale, json_out, digits_refs, letters_refs, case_ref):
    """Write TEXT in generated handwriting, e.g. kepkreator render "Hello2024" -o hello.png."""
    check_report_path(json_out)
    renderer = _renderer(digits_refs, letters_refs, case_ref)
    rendered = renderer.render(text, best_of=best_of, seed=seed)
    # The labels first, the picture last: a failed write leaves no picture without its labels.
    write_report(json_out, {"text": text, "png": str(out), "best_of": best_of, "seed": seed,
                             **rendered.labels(scale)})
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(rendered.png(scale))
    except OSError:
        if json_out:
            Path(json_out).unlink(missing_ok=True)
        raise
    scores = "  ".join(f"{c['char']}:{c['confidence']:.3f}"
                       + (f" (case {c['case_confidence']:.2f})" if "case_confidence" in c else "")
                       for c in rendered.characters if "confidence" in c)
    click.echo(f"{out}: {rendered.image.shape[1] * scale}x{rendered.image.shape[0] * scale}, "
               f"best of {best_of}; confidence {scores}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-cost", type=click.IntRange(1), default=1024, show_default=True,
              help="Largest request, in candidates (characters x best_of) plus the PNG's "
                   "pixels (100,000 per unit); larger ones are a 422 naming the limit.")
@click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Requests rendering at once (they take turns at the models).")
@click.option("--max-queued", type=click.IntRange(0, 10_000), default=32, show_default=True,
              help="Requests waiting for a render place; beyond, a 503 with Retry-After.")
@with_options(MODEL_OPTIONS)
def serve(host, port, max_cost, max_in_flight, max_queued, digits_refs, letters_refs, case_ref):
    """HTTP API (GET /generate/{text}, PNG or ?format=json) and a page at / to try it."""
    import socket

    import uvicorn

    from kepkreator.errors import KepKreatorError
    from kepkreator.server import Limits, create_app
    app = create_app(_renderer(digits_refs, letters_refs, case_ref),  # models load once, here
                     Limits(max_cost=max_cost, max_in_flight=max_in_flight,
                            max_queued=max_queued))
    # Bound here and handed to uvicorn: a taken port or an unknown host is one line before any
    # "serving on", which then names the real port (also for --port 0).
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise KepKreatorError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    click.echo(f"serving on http://{host}:{bound}/", err=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=bound, log_level="warning")).run(
        sockets=[sock])
