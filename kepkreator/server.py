"""HTTP API and page for handwritten text: ``GET /generate/{text}`` (PNG, or JSON with per-character
confidences) and a small page at ``/``. The models are loaded once, when the app is made."""
from __future__ import annotations

import base64

from kepkreator.handwriting import MAX_BEST_OF, MAX_TEXT_LENGTH, TextError, TextRenderer

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


def create_app(renderer: TextRenderer):
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="KepKreator handwriting", version="1")
    page = (PAGE.replace("__ALPHABET__", _html_alphabet(renderer))
            .replace("__MAX__", str(MAX_TEXT_LENGTH)).replace("__BEST__", str(MAX_BEST_OF)))

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/health")
    def health():
        return {"status": "ok", "alphabet": renderer.alphabet,
                "max_text_length": MAX_TEXT_LENGTH}

    # Plain `def`: FastAPI runs it in its thread pool, so slow renders do not block the server.
    @app.get("/generate/{text}", responses={200: {"content": {"image/png": {}}},
                                            422: {"description": "text the models cannot write"}})
    def generate(text: str, best_of: int = Query(8, ge=1, le=MAX_BEST_OF),
                 seed: int | None = Query(None, ge=0, le=2**32 - 1,
                                          description="same seed, same picture"),
                 scale: int = Query(2, ge=1, le=8),
                 format: str = Query("png", pattern="^(png|json)$")):
        try:
            rendered = renderer.render(text, best_of=best_of, seed=seed)
        except TextError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        png = rendered.png(scale)
        if format == "json":
            return {"text": text, "best_of": best_of, "seed": seed, **rendered.labels(scale),
                    "png_base64": base64.b64encode(png).decode()}
        return Response(png, media_type="image/png")

    return app


def _html_alphabet(renderer: TextRenderer) -> str:
    from html import escape

    from kepkreator.handwriting import describe_alphabet
    return escape(describe_alphabet(renderer.alphabet))
