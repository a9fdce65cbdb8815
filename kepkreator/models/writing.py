"""Bundles out: a trained model saved with its card, or a foreign Keras file wrapped in one."""
from __future__ import annotations

import json
from pathlib import Path

from kepkreator.errors import BundleError
from kepkreator.config_files import parse_json
from kepkreator.models.bundle import load_bundle
from kepkreator.models.card import CARD_FORMAT, CARD_NAME, MODEL_FILE, check_card, sha256_file


def write_bundle(path: str | Path, model, card: dict) -> Path:
    """Save model + card; the card is written last, so a bundle with a card is complete."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Over an older bundle, its card goes first: a run stopped mid-save then leaves no bundle,
    # never the old card beside a half-written model.
    (path / CARD_NAME).unlink(missing_ok=True)
    card = {"format": CARD_FORMAT, "model_file": MODEL_FILE, **card}
    # Without the optimizer's state, a third of the file: a bundle is for inference, and a run
    # resumes from its work directory's checkpoints, which keep the optimizer.
    optimizer = getattr(model, "optimizer", None)
    model.optimizer = None
    try:
        model.save(path / card["model_file"])
    finally:
        model.optimizer = optimizer
    card["model_sha256"] = sha256_file(path / card["model_file"])
    (path / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return path


def import_model(model_file: str | Path, card_file: str | Path, out: str | Path) -> Path:
    """Wrap a foreign Keras file into a bundle with a hand-written card, and prove it loads.

    The bundle is built beside ``out`` and moved into place only once it loads, so a failed
    import leaves nothing behind, and a directory that already holds something is refused
    rather than written into (or, on failure, removed)."""
    import shutil
    import tempfile
    model_file, card_file, out = Path(model_file), Path(card_file), Path(out)
    if not model_file.is_file():
        raise BundleError(f"model file not found: {model_file}")
    try:
        card = parse_json(Path(card_file).read_text())
    except FileNotFoundError:
        raise BundleError(f"card not found: {card_file}") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, a repeated key
        raise BundleError(f"malformed card {card_file}: {exc}") from None
    check_card(card, card_file, required=("kind", "class_set", "signature"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"output {out} already exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        card["model_file"] = model_file.name
        shutil.copyfile(model_file, work / model_file.name)
        card["model_sha256"] = sha256_file(work / model_file.name)
        (work / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        try:
            load_bundle(work)
        except BundleError as exc:  # name the user's card, not the scratch copy
            raise BundleError(str(exc).replace(str(work / CARD_NAME), str(card_file))
                              .replace(str(work / model_file.name), str(model_file))
                              .replace(str(work), str(out))) from None
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
