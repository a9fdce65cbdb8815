"""HTTP API and page for handwritten text: ``GET /generate/{text}`` (PNG, or JSON with per-character
confidences) and a small page at ``/``. The models are loaded once, when the app is made.

The server stays fair under load: a request over the cost budget is a 422 naming the limit; a
bounded number render at once and a bounded number wait, beyond which a 503 with Retry-After;
renders take turns at the models call by call, so a short request is not held behind long
ones; and a client that hangs up has its render stopped at the next model call.
"""
from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from kepkreator.handwriting import (MAX_BEST_OF, MAX_TEXT_LENGTH, RenderCancelled, TextError,
                                    TextRenderer)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>KepKreator handwriting</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
 input[type=text] { font-size: 1.2rem; width: 60%; padding: .3rem; }
 button { font-size: 1.1rem; padding: .3rem 1rem; }
 #error { color: #b00020; min-height: 1.5em; }
 #result { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
 #scores { font-size: .9rem; color: #555; }
</style></head>
<body>
<h1>KepKreator handwriting</h1>
<p>Each character is the most confident of <i>N</i> generated candidates (scored by the validator).
Characters: __ALPHABET__; at most __MAX__ characters.</p>
<form id="form">
 <input id="text" type="text" name="text" value="Hello2024" maxlength="__MAX__" autofocus>
 <label>best of <input id="best_of" type="number" min="1" max="__BEST__" value="8"></label>
 <button id="go" type="submit">Write</button>
</form>
<p id="error" role="alert"></p>
<p><img id="result" alt="handwritten text" hidden></p>
<p id="scores"></p>
<script>
const form = document.getElementById("form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = document.getElementById("text").value;
  const bestOf = document.getElementById("best_of").value;
  const error = document.getElementById("error"), img = document.getElementById("result");
  const url = "/generate/" + encodeURIComponent(text) + "?format=json&best_of=" + bestOf;
  error.textContent = "";
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) { error.textContent = body.detail; img.hidden = true; return; }
  img.src = "data:image/png;base64," + body.png_base64;
  img.hidden = false;
  document.getElementById("scores").textContent = body.characters
    .filter(c => c.class).map(c => c.char + " " + (100 * c.confidence).toFixed(1) + "%"
      + (c.case_confidence === undefined ? "" : " (case " + (100 * c.case_confidence).toFixed(0)
         + "%)")).join("  ");
});
</script>
</body></html>
"""


@dataclass(frozen=True)
class Limits:
    """What one request may cost and how many the server holds at once."""
    max_cost: int = 1024      # cost units per request (request_cost)
    max_in_flight: int = 8    # requests rendering at once, taking turns at the models
    max_queued: int = 32      # requests waiting for one of those places; beyond: 503
    retry_after: int = 2      # seconds a 503 asks a client to wait


# A candidate (generator, validator and case-validator call) is the unit: about 1.5-2.5 ms on
# the 2-core CPU this was measured on (`kepkreator serve` docs). Encoding the PNG costs about
# 0.01 s per million pixels there, some 5 candidates' worth, so scale counts by its pixels.
PIXELS_PER_UNIT = 100_000
GLYPH_PIXELS = 800  # a character's share of the line at scale 1 (measured: 757), margins in


def request_cost(text: str, best_of: int, scale: int) -> int:
    """Candidates asked for (characters x best_of; a letter's extra draws for its case come out
    of the same budget) plus the PNG's pixels (scale squared) in candidate units."""
    characters = len(text.replace(" ", ""))
    return characters * best_of + -(-len(text) * GLYPH_PIXELS * scale * scale // PIXELS_PER_UNIT)


def create_app(renderer: TextRenderer, limits: Limits = Limits()):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    app = FastAPI(title="KepKreator handwriting", version="1")
    page = (PAGE.replace("__ALPHABET__", _html_alphabet(renderer))
            .replace("__MAX__", str(MAX_TEXT_LENGTH)).replace("__BEST__", str(MAX_BEST_OF)))
    # Renders run here, at most max_in_flight at once; the rest wait in the executor's queue,
    # which ``pending`` bounds. Each render takes turns at the models call by call.
    renders = ThreadPoolExecutor(limits.max_in_flight, thread_name_prefix="render")
    state = {"pending": 0, "completed": 0, "cancelled": 0}
    app.state.limits, app.state.renders = limits, state

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index():
        return page

    @app.api_route("/health", methods=["GET", "HEAD"])
    def health():
        return {"status": "ok", "alphabet": renderer.alphabet,
                "max_text_length": MAX_TEXT_LENGTH, "max_cost": limits.max_cost,
                "max_in_flight": limits.max_in_flight, "max_queued": limits.max_queued,
                **state}

    @app.get("/generate/{text}", responses={
        200: {"content": {"image/png": {}}},
        422: {"description": "text the models cannot write, or a request over the cost limit"},
        503: {"description": "too many requests at once; retry after Retry-After seconds"}})
    async def generate(request: Request, text: str,
                       best_of: int = Query(8, ge=1, le=MAX_BEST_OF),
                       seed: int | None = Query(None, ge=0, le=2**32 - 1,
                                                description="same seed, same picture"),
                       scale: int = Query(2, ge=1, le=8),
                       format: str = Query("png", pattern="^(png|json)$")):
        try:
            renderer.check(text)
        except TextError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        cost = request_cost(text, best_of, scale)
        if cost > limits.max_cost:
            raise HTTPException(status_code=422, detail=(
                f"this request costs {cost:,} units (characters x best_of, plus the picture's "
                f"pixels at scale {scale}); the limit is {limits.max_cost:,}: ask for fewer "
                "characters, a lower best_of or a smaller scale"))
        if state["pending"] >= limits.max_in_flight + limits.max_queued:
            raise HTTPException(status_code=503, headers={"Retry-After": str(limits.retry_after)},
                                detail=f"busy: {state['pending']} requests are rendering or "
                                       "waiting; try again shortly")
        gone = threading.Event()

        def work():
            if gone.is_set():  # its client left while it waited: never started
                raise RenderCancelled
            rendered = renderer.render(text, best_of=best_of, seed=seed,
                                       max_candidates=limits.max_cost, cancelled=gone.is_set)
            return rendered, rendered.png(scale)

        state["pending"] += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(renders, work)
            while not future.done():  # wakes at once when the render ends
                await asyncio.wait({future}, timeout=0.05)
                if not future.done() and await request.is_disconnected():
                    gone.set()  # the render stops before its next model call
            try:
                rendered, png = future.result()
            except RenderCancelled:
                state["cancelled"] += 1
                return Response(status_code=499)  # nobody is listening
            state["completed"] += 1
        finally:
            state["pending"] -= 1
        if format == "json":
            return {"text": text, "best_of": best_of, "seed": seed, **rendered.labels(scale),
                    "png_base64": base64.b64encode(png).decode()}
        return Response(png, media_type="image/png")

    return app


def _html_alphabet(renderer: TextRenderer) -> str:
    from html import escape

    from kepkreator.handwriting import describe_alphabet
    return escape(describe_alphabet(renderer.alphabet))
