"""Handwritten text from the character generators: best of N per character, set on a line.

The seed's text endpoint drew each character once and trusted its label; here every character
gets N candidates, the validator scores them and the most confident one of the requested class
is kept, so what is written is what was asked for. Letters come from the case-merged letters
bundle (EMNIST files upper and lower case under one class), so 'e' and 'E' share a class; a
case-sensitive validator (``letters52``) then picks, among the candidates, the one written in
the case that was typed — the letters generator draws both cases (its class splitting), it just
cannot be asked for one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kepkreator.errors import KepKreatorError
from kepkreator.turns import FairTurns

MAX_TEXT_LENGTH = 64
MAX_BEST_OF = 64
# P(typed case | either case) below which a letter's candidates are topped up (see render).
CASE_SURE = 0.9
INK_THRESHOLD = 40  # uint8 intensity that counts as ink when cropping and aligning
CASE_TOLD_APART = 0.5  # held-out accuracy on both cases a case validator needs to pick a case
# Candidates per model call: a request's work is cut into calls this small, so that others take
# turns between them (kepkreator.turns) and a cancelled request stops within one call.
MODEL_CALL = 128


class TextError(KepKreatorError):
    """Text the loaded models cannot write (unknown characters, too long)."""


class RenderCancelled(Exception):
    """The caller gave up on the render (an HTTP client that disconnected)."""


@dataclass
class RenderedText:
    image: np.ndarray                 # uint8 (h, w), dark ink on white
    characters: list[dict]            # per character: char, class, confidence, candidates, box
    #                                   [x, y, width, height] of its ink in ``image`` (not spaces)
    glyphs: list = field(default_factory=list)  # per character: the 28x28 sample, None: space

    def labels(self, scale: int) -> dict:
        """The size of ``png(scale)`` and ``characters`` with their boxes in its pixels: what
        the API's JSON and ``render --json-out`` give."""
        return {"width": self.image.shape[1] * scale, "height": self.image.shape[0] * scale,
                "characters": [{**c, "box": [v * scale for v in c["box"]]} if "box" in c
                               else c for c in self.characters]}

    def png(self, scale: int = 2) -> bytes:
        from kepkreator.imageio import encode_png_batch
        return encode_png_batch(self.image.repeat(scale, 0).repeat(scale, 1)[None])[0]


class TextRenderer:
    """Loads the bundles once; ``render`` is safe to call from many threads."""

    def __init__(self, generator_refs=("default:digits", "default:letters"),
                 validator_refs=("default:digits", "default:letters"), case_validator_ref=None):
        from kepkreator.models.bundle import load_bundle
        self.models = []       # (generator, validator) per class set
        self.char_map = {}     # character -> (model index, class index)
        for gen_ref, val_ref in zip(generator_refs, validator_refs, strict=True):
            generator = load_bundle(gen_ref, "generator")
            validator = load_bundle(val_ref, "validator")
            if generator.class_set != validator.class_set:
                raise KepKreatorError(f"{gen_ref} and {val_ref} have different class sets")
            index = len(self.models)
            self.models.append((generator, validator))
            class_set = generator.class_set
            for c, char in enumerate(class_set.chars):
                variants = {char, char.lower(), char.upper()} if char in class_set.case_merged \
                    else {char}
                for variant in variants:
                    self.char_map.setdefault(variant, (index, c))
        self.case_validator, self.case_classes = None, {}
        if case_validator_ref:
            self.case_validator = load_bundle(case_validator_ref, "validator")
            chars = self.case_validator.class_set.chars
            pairs = [ch for ch in chars if ch.swapcase() != ch and ch.swapcase() in chars]
            if not pairs:  # a merged class cannot tell the cases apart
                raise KepKreatorError(
                    f"case validator {case_validator_ref}: class set "
                    f"{self.case_validator.class_set.name!r} does not tell upper from lower case")
            accuracy = self.case_validator.card.get("metrics", {}).get("eval_per_class_accuracy")
            if not accuracy or len(accuracy) != len(chars):
                raise KepKreatorError(
                    f"case validator {case_validator_ref}: its card has no held-out per-class "
                    "accuracy (metrics.eval_per_class_accuracy), so which letters it tells apart "
                    "by case is unknown; train it with --holdout or --eval-data")
            # A say only where it recognises both cases on real letters: for c/C, o/O... it
            # learnt the more frequent case, and its vote would be that prior, not evidence.
            self.case_classes = {ch: (chars.index(ch), chars.index(ch.swapcase()))
                                 for ch in pairs if min(accuracy[chars.index(ch)], accuracy[
                                     chars.index(ch.swapcase())]) >= CASE_TOLD_APART}
        self._turns = FairTurns()  # one model call at a time: TF threads already fill cores

    @property
    def alphabet(self) -> str:
        return "".join(sorted(self.char_map)) + " "

    def check(self, text: str) -> None:
        if not text or not text.strip():
            raise TextError("text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise TextError(f"text has {len(text)} characters, more than the maximum "
                            f"{MAX_TEXT_LENGTH}")
        unknown = sorted({ch for ch in text if ch != " " and ch not in self.char_map})
        if unknown:
            raise TextError("character(s) " + " ".join(repr(ch) for ch in unknown)
                            + f" not in the loaded class sets (can write: "
                              f"{describe_alphabet(self.alphabet)})")

    def render(self, text: str, best_of: int = 8, seed: int | None = None, gap: int = 3,
               space: int = 12, margin: int = 6, max_candidates: int | None = None,
               cancelled=lambda: False) -> RenderedText:
        """``max_candidates``: the most candidates drawn in all, extra ones for a letter's case
        included (None: no bound beyond best_of and MAX_BEST_OF); ``cancelled()`` is asked
        before every model call, and True ends the render with RenderCancelled."""
        self.check(text)
        if not 1 <= best_of <= MAX_BEST_OF:
            raise TextError(f"best_of must be between 1 and {MAX_BEST_OF}, not {best_of}")
        rng = np.random.default_rng(seed)
        spare = np.inf if max_candidates is None else max_candidates - best_of * len(
            text.replace(" ", ""))
        glyphs: list[np.ndarray | None] = [None] * len(text)
        info: list[dict] = [{"char": ch} for ch in text]
        wanted = {}  # model index -> positions in text
        for pos, ch in enumerate(text):
            if ch != " ":
                wanted.setdefault(self.char_map[ch][0], []).append(pos)
        for model_index, positions in sorted(wanted.items()):
            generator = self.models[model_index][0]
            drawn = self._draw(model_index, text, positions, best_of, rng, cancelled)
            # A letter whose pick is not surely in the typed case gets more candidates, best_of
            # at a time up to MAX_BEST_OF: some forms are rare (the letters generator seldom
            # draws a capital E), and the first best_of may hold none, or only borderline ones,
            # or a sure one the validator barely reads as the letter.
            while True:  # (a NaN case score, no say, is never < CASE_SURE)
                short = [i for i, d in enumerate(drawn) if d["case"][_pick(d)] < CASE_SURE
                         and len(d["case"]) + best_of <= MAX_BEST_OF]
                short = short[:max(int(spare // best_of), 0)] if spare < np.inf else short
                if not short:
                    break
                spare -= best_of * len(short)
                more = self._draw(model_index, text, [positions[i] for i in short], best_of, rng,
                                  cancelled)
                for i, extra in zip(short, more):
                    drawn[i] = {k: np.concatenate([drawn[i][k], extra[k]]) for k in extra}
            for pos, d in zip(positions, drawn):
                k = _pick(d)
                glyphs[pos] = d["image"][k]
                info[pos].update({
                    "class": generator.class_set.chars[self.char_map[text[pos]][1]],
                    "confidence": float(d["score"][k]),
                    "predicted": generator.class_set.chars[int(d["predicted"][k])],
                    "candidates": len(d["score"]),
                    "candidate_confidence_mean": float(d["score"].mean())})
                if not np.isnan(d["case"][k]):
                    info[pos]["case_confidence"] = float(d["case"][k])
        image, boxes = layout(glyphs, text, gap, space, margin)
        for character, box in zip(info, boxes):
            if box is not None:
                character["box"] = box
        return RenderedText(image, info, glyphs)

    def _in_turns(self, forward, inputs, cancelled):
        """``forward`` over ``inputs`` (arrays of one length), MODEL_CALL rows per turn."""
        parts = []
        for lo in range(0, len(inputs[0]), MODEL_CALL):
            if cancelled():
                raise RenderCancelled
            with self._turns.turn():
                parts.append(forward(*(x[lo:lo + MODEL_CALL] for x in inputs)))
        return np.concatenate(parts)

    def _draw(self, model_index, text, positions, n, rng, cancelled) -> list[dict]:
        """``n`` candidates for each position: image, class score, predicted class and case
        score, P(typed case | either case) by the case validator — NaN where it has no say
        (digits, a generator that knows case itself, no case validator)."""
        generator, validator = self.models[model_index]
        labels = np.repeat([self.char_map[text[p]][1] for p in positions], n)
        z = generator.sample_latent(rng, len(labels))
        images = self._in_turns(generator.generate, (z, labels), cancelled)
        probs = self._in_turns(validator.probabilities, (images,), cancelled)
        case = np.full(len(labels), np.nan)
        merged = generator.class_set.case_merged
        asked = np.repeat([text[p] for p in positions], n)
        says = np.repeat([text[p] in self.case_classes
                          and generator.class_set.chars[self.char_map[text[p]][1]] in merged
                          for p in positions], n).astype(bool)
        if says.any():
            case_probs = self._in_turns(self.case_validator.probabilities, (images[says],),
                                        cancelled)
            typed, other = np.array([self.case_classes[ch] for ch in asked[says]]).T
            rows = np.arange(len(typed))
            case[says] = case_probs[rows, typed] / np.maximum(
                case_probs[rows, typed] + case_probs[rows, other], 1e-12)
        score = probs[np.arange(len(labels)), labels]
        return [{"image": images[sl], "score": score[sl], "predicted": probs[sl].argmax(1),
                 "case": case[sl]} for sl in (slice(i * n, (i + 1) * n)
                                               for i in range(len(positions)))]


def _pick(candidates: dict) -> int:
    """The candidate most surely both the asked-for letter and in the typed case."""
    case = np.where(np.isnan(candidates["case"]), 1.0, candidates["case"])
    return int((candidates["score"] * case).argmax())


def describe_alphabet(alphabet: str) -> str:
    parts = []
    for lo, hi in (("0", "9"), ("A", "Z"), ("a", "z")):
        if all(chr(c) in alphabet for c in range(ord(lo), ord(hi) + 1)):
            parts.append(f"{lo}-{hi}")
            alphabet = "".join(ch for ch in alphabet if not lo <= ch <= hi)
    rest = alphabet.replace(" ", "")
    return ", ".join(parts + ([rest] if rest else []) + ["space"])


# Where a character's ink sits on the line, in cap heights above the baseline (top, bottom).
# EMNIST scales every character to fill the same box, so an 'o' comes out as tall as an 'O' and
# an 'e' as tall as an 'H'; the sizes that make a line read as handwriting (and tell c, o, s, v,
# w, x, z from C, O, S, V, W, X, Z, whose shapes are the same) are put back here.
X_HEIGHT = 0.6
DESCENDER = 0.4
CAP_HEIGHT_PX = 24
WIDEST = 1.2  # cap heights: a wide glyph (m, W) is scaled to this width instead of to height


def line_position(char: str) -> tuple[float, float]:
    """(top, bottom) of ``char``'s ink in cap heights above the baseline."""
    if char in "gpqy":
        return X_HEIGHT, -DESCENDER
    if char == "j":
        return 0.85, -DESCENDER
    if char in "it":
        return 0.85, 0.0
    if char in "bdfhkl":
        return 1.0, 0.0
    if char.islower():
        return X_HEIGHT, 0.0
    return 1.0, 0.0


def _fit(glyph: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """``glyph``'s ink, scaled to span ``top``..``bottom``; strokes of a glyph made much smaller
    are thickened by a pixel so that small letters are written with the same pen."""
    from PIL import Image
    ink = glyph > INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    scale = min((top - bottom) * CAP_HEIGHT_PX / height, WIDEST * CAP_HEIGHT_PX / width)
    crop = glyph[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    if scale < 0.85:
        padded = np.pad(fitted, ((0, 1), (0, 1)))
        fitted = np.maximum.reduce([padded[:-1, :-1], padded[1:, :-1], padded[:-1, 1:]])
    return fitted


def layout(glyphs: list[np.ndarray | None], text: str, gap: int = 3, space: int = 12,
           margin: int = 6) -> tuple[np.ndarray, list[list[int] | None]]:
    """Glyphs side by side, ``gap`` pixels apart, each scaled and set on the line as its
    character of ``text`` sits in handwriting (``line_position``): capitals and digits fill the
    line, small letters stand at x-height, g j p q y hang below the baseline. ``None`` is a
    space. Returns the line, dark ink on white, and each character's box [x, y, width, height]
    (None for a space or a blank sample): with them a line is labelled data for text
    recognition or character detection."""
    if len(glyphs) != len(text):
        raise ValueError(f"{len(glyphs)} glyphs for {len(text)} characters")
    ascent, descent = CAP_HEIGHT_PX, round(DESCENDER * CAP_HEIGHT_PX)
    height = ascent + descent  # rows 0..ascent-1 above the baseline, descent rows below
    pieces, boxes, x = [], [], margin
    for glyph, char in zip(glyphs, text):
        if glyph is None or not (glyph > INK_THRESHOLD).any():
            # a space; a blank sample keeps a narrow gap rather than nothing
            pieces.append(np.zeros((height, space if glyph is None else 4 + gap), np.uint8))
            boxes.append(None)
            x += pieces[-1].shape[1]
            continue
        top, bottom = line_position(char)
        fitted = _fit(glyph, top, bottom)
        # Hanging letters keep their top on the x-height line; the others stand on the baseline.
        first_row = (ascent - round(top * CAP_HEIGHT_PX) if bottom < 0
                     else ascent - round(bottom * CAP_HEIGHT_PX) - fitted.shape[0])
        first_row = min(max(first_row, 0), height - fitted.shape[0])
        canvas = np.zeros((height, fitted.shape[1] + gap), np.uint8)
        canvas[first_row:first_row + fitted.shape[0], :fitted.shape[1]] = fitted
        pieces.append(canvas)
        boxes.append([x, margin + first_row, fitted.shape[1], fitted.shape[0]])
        x += canvas.shape[1]
    body = np.concatenate(pieces, axis=1) if pieces else np.zeros((height, 1), np.uint8)
    return 255 - np.pad(body, margin), boxes
