"""Handwritten text from the character generators: best of N per character, one baseline.

The seed's text endpoint drew each character once and trusted its label; here every character
gets N candidates, the validator scores them and the most confident one of the requested class
is kept, so what is written is what was asked for. Letters come from the case-merged letters
bundle (EMNIST files upper and lower case under one class), so 'e' and 'E' share a class; a
case-sensitive validator (``letters52``) then picks, among the candidates, the one written in
the case that was typed — the letters generator draws both cases (its class splitting), it just
cannot be asked for one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from kepkreator.errors import KepKreatorError

MAX_TEXT_LENGTH = 64
MAX_BEST_OF = 64
INK_THRESHOLD = 40  # uint8 intensity that counts as ink when cropping and aligning
CASE_TOLD_APART = 0.5  # held-out accuracy on both cases a case validator needs to pick a case


class TextError(KepKreatorError):
    """Text the loaded models cannot write (unknown characters, too long)."""


@dataclass
class RenderedText:
    image: np.ndarray                 # uint8 (h, w), dark ink on white
    characters: list[dict]            # per character: char, class, confidence, candidates
    glyphs: list = field(default_factory=list)  # per character: the 28x28 sample, None: space

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
        self._lock = threading.Lock()  # one model call at a time: TF threads already fill cores

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
               space: int = 12, margin: int = 6) -> RenderedText:
        self.check(text)
        if not 1 <= best_of <= MAX_BEST_OF:
            raise TextError(f"best_of must be between 1 and {MAX_BEST_OF}, not {best_of}")
        rng = np.random.default_rng(seed)
        glyphs: list[np.ndarray | None] = [None] * len(text)
        info: list[dict] = [{"char": ch} for ch in text]
        wanted = {}  # model index -> positions in text
        for pos, ch in enumerate(text):
            if ch != " ":
                wanted.setdefault(self.char_map[ch][0], []).append(pos)
        for model_index, positions in sorted(wanted.items()):
            generator, validator = self.models[model_index]
            classes = np.array([self.char_map[text[p]][1] for p in positions])
            labels = np.repeat(classes, best_of)
            z = generator.sample_latent(rng, len(labels))
            with self._lock:
                images = generator.generate(z, labels)
                probs = validator.probabilities(images)
            scores = probs[np.arange(len(labels)), labels].reshape(len(positions), best_of)
            case_scores = self._case_scores(text, positions, generator, images, best_of)
            choice = (scores * np.where(np.isnan(case_scores), 1.0, case_scores)).argmax(1)
            for row, pos in enumerate(positions):
                k = row * best_of + choice[row]
                glyphs[pos] = images[k]
                info[pos].update({
                    "class": generator.class_set.chars[classes[row]],
                    "confidence": float(scores[row, choice[row]]),
                    "predicted": generator.class_set.chars[int(probs[k].argmax())],
                    "candidates": best_of,
                    "candidate_confidence_mean": float(scores[row].mean())})
                if not np.isnan(case_scores[row, choice[row]]):
                    info[pos]["case_confidence"] = float(case_scores[row, choice[row]])
        return RenderedText(layout(glyphs, gap, space, margin), info, glyphs)

    def _case_scores(self, text, positions, generator, images, best_of) -> np.ndarray:
        """P(typed case | one of the two cases) per candidate, by the case validator; NaN where
        it has no say (digits, a generator that knows case itself, no case validator)."""
        out = np.full((len(positions), best_of), np.nan)
        merged = generator.class_set.case_merged
        rows = [r for r, p in enumerate(positions) if text[p] in self.case_classes
                and generator.class_set.chars[self.char_map[text[p]][1]] in merged]
        if not rows:
            return out
        picked = images.reshape(len(positions), best_of, *images.shape[1:])[rows]
        with self._lock:
            probs = self.case_validator.probabilities(picked.reshape(-1, *images.shape[1:]))
        probs = probs.reshape(len(rows), best_of, -1)
        for i, r in enumerate(rows):
            typed, other = self.case_classes[text[positions[r]]]
            out[r] = probs[i, :, typed] / np.maximum(probs[i, :, typed] + probs[i, :, other],
                                                     1e-12)
        return out


def describe_alphabet(alphabet: str) -> str:
    parts = []
    for lo, hi in (("0", "9"), ("A", "Z"), ("a", "z")):
        if all(chr(c) in alphabet for c in range(ord(lo), ord(hi) + 1)):
            parts.append(f"{lo}-{hi}")
            alphabet = "".join(ch for ch in alphabet if not lo <= ch <= hi)
    rest = alphabet.replace(" ", "")
    return ", ".join(parts + ([rest] if rest else []) + ["space"])


def layout(glyphs: list[np.ndarray | None], gap: int = 3, space: int = 12,
           margin: int = 6) -> np.ndarray:
    """Glyphs side by side: cropped to their ink columns, ``gap`` pixels apart, the bottom of
    every glyph's ink on one baseline; ``None`` is a space. Dark ink on white."""
    columns, bottoms = [], []
    for glyph in glyphs:
        if glyph is None:
            columns.append(None)
            continue
        ink = glyph > INK_THRESHOLD
        cols = np.flatnonzero(ink.any(0))
        rows = np.flatnonzero(ink.any(1))
        if not len(cols):  # a blank sample: keep a narrow gap rather than nothing
            columns.append(np.zeros((28, 4), np.uint8))
            bottoms.append(27)
            continue
        columns.append(glyph[:, cols[0]:cols[-1] + 1])
        bottoms.append(int(rows[-1]))
    baseline = max(bottoms) if bottoms else 27
    height = 28 + baseline - min(bottoms) if bottoms else 28
    pieces = []
    bottom_iter = iter(bottoms)
    for piece in columns:
        if piece is None:
            pieces.append(np.zeros((height, space), np.uint8))
            continue
        shift = baseline - next(bottom_iter)  # move this glyph down onto the baseline
        canvas = np.zeros((height, piece.shape[1] + gap), np.uint8)
        canvas[shift:shift + 28, :piece.shape[1]] = piece
        pieces.append(canvas)
    body = np.concatenate(pieces, axis=1) if pieces else np.zeros((height, 1), np.uint8)
    body = np.pad(body, margin)
    return 255 - body
