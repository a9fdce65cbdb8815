import gzip

import numpy as np
import pytest
from PIL import Image

from kepkreator.classsets import get_class_set
from kepkreator.data import load_idx_split, load_sources, parse_source, read_idx, write_idx
from kepkreator.data.folders import load_class_folders, to_emnist_style
from kepkreator.data.splits import deduplicate, hash_split
from kepkreator.errors import DataError


def _asymmetric_images(n):
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 2:5, 10:20] = 255  # a horizontal bar near the top: transposing makes it vertical
    images[np.arange(n), 27, np.arange(n) % 28] = 7
    return images


def test_idx_round_trip_and_emnist_transposition(tmp_path):
    upright = _asymmetric_images(6)
    # EMNIST stores images transposed; two partial files out of order on disk.
    write_idx(tmp_path / "emnist-digits-train-3-to-5-images-idx3-ubyte.gz", upright[3:].transpose(0, 2, 1))
    write_idx(tmp_path / "emnist-digits-train-3-to-5-labels-idx1-ubyte.gz", np.array([3, 4, 5]))
    write_idx(tmp_path / "emnist-digits-train-0-to-2-images-idx3-ubyte.gz", upright[:3].transpose(0, 2, 1))
    write_idx(tmp_path / "emnist-digits-train-0-to-2-labels-idx1-ubyte.gz", np.array([0, 1, 2]))
    images, labels, cs = load_idx_split(tmp_path, "emnist-digits", "train")
    assert cs.name == "digits"
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(images, upright)


def test_corrupt_and_missing_idx_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "magic.gz", "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic.gz")
    write_idx(tmp_path / "t.gz", np.zeros((3, 28, 28), np.uint8))
    raw = gzip.decompress((tmp_path / "t.gz").read_bytes())
    with gzip.open(tmp_path / "t.gz", "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(DataError, match="header promises"):
        read_idx(tmp_path / "t.gz")
    with pytest.raises(DataError, match="no mnist train IDX files"):
        load_idx_split(tmp_path, "mnist", "train")
    with pytest.raises(DataError, match="data directory not found"):
        load_idx_split(tmp_path / "missing", "mnist", "train")


def test_source_strings():
    assert parse_source("mnist:train@/d") == ("mnist", "train", "/d")
    assert parse_source("folder@x/y") == ("folder", None, "x/y")
    assert parse_source("dataset@out/d") == ("dataset", None, "out/d")
    assert parse_source("dataset:validation@out/d") == ("dataset", "validation", "out/d")
    with pytest.raises(DataError, match="names no split"):
        parse_source("dataset:@out/d")
    for bad in ("mnist", "mnist@/d", "kmnist:train@/d"):
        with pytest.raises(DataError):
            parse_source(bad)
    # Path would fold 'gs://b/x' into 'gs:/b/x' and call that missing.
    with pytest.raises(DataError, match=r"'dataset@gs://b/x': gs://b/x: gs:// paths are not read or written here"):
        parse_source("dataset@gs://b/x")


def test_real_mnist(mnist_dir):
    train = load_sources([f"mnist:train@{mnist_dir}"], "digits")
    test = load_sources([f"mnist:test@{mnist_dir}"], "digits")
    assert len(train) == 60000 and len(test) == 10000
    assert train.class_counts().min() == 5421 and train.class_counts().max() == 6742
    assert abs(train.images.mean() - 33.318) < 0.01
    # upright: the mean "1" is a tall vertical stroke, taller than it is wide
    one = train.images[train.labels == 1].mean(0) > 120
    assert one.any(1).sum() > 2 * one.any(0).sum()


def test_real_emnist_letters_union_is_upright_and_deduplicated(emnist_dir, mnist_dir):
    sources = [f"emnist-byclass:test@{emnist_dir}", f"emnist-bymerge:test@{emnist_dir}"]
    letters = load_sources(sources, "letters")
    dropped = letters.provenance[-1]["duplicates_dropped"]
    assert 100_000 < len(letters) < 117_201 and dropped > 5_000
    assert (letters.class_counts() > 1000).all()
    # EMNIST 'l'/'I' are vertical strokes once upright, like MNIST's 1
    stroke = letters.images[letters.labels == get_class_set("letters").index_of("I")].mean(0) > 120
    assert stroke.any(1).sum() > 2 * stroke.any(0).sum()
    digits = load_sources([f"emnist-byclass:test@{emnist_dir}"], "digits")
    assert len(digits) > 50_000


def test_dedupe_and_hash_split_are_order_independent():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (500, 28, 28), dtype=np.uint8)
    doubled = np.concatenate([images, images[:50]])
    labels = np.arange(550) % 10
    unique, unique_labels, dropped = deduplicate(doubled, labels)
    assert dropped == 50 and len(unique) == 500
    mask = hash_split(images, 0.2, seed=3)
    order = rng.permutation(500)
    np.testing.assert_array_equal(hash_split(images[order], 0.2, seed=3), mask[order])
    assert 0.12 < mask.mean() < 0.28
    assert not np.array_equal(hash_split(images, 0.2, seed=4), mask)


def _photo(char_box, size=(40, 36), ink=30, paper=200):
    img = np.full(size[::-1], paper, np.uint8)
    y0, y1, x0, x1 = char_box
    img[y0:y1, x0:x1] = ink
    return Image.fromarray(img).convert("RGBA")


def test_photo_becomes_white_ink_on_black_centred():
    out = to_emnist_style(_photo((5, 30, 3, 9)))  # tall dark bar off to the left
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[0].max() < 30 and out[:, 0].max() < 30  # black border
    cols = np.flatnonzero(out.max(0) > 128)
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1.5  # re-centred
    rows = np.flatnonzero(out.max(1) > 128)
    assert rows[-1] - rows[0] > 2 * (cols[-1] - cols[0])  # aspect kept


def test_degenerate_and_unknown_folders(tmp_path, capsys):
    (tmp_path / "A").mkdir()
    (tmp_path / "b").mkdir()
    _photo((5, 30, 3, 20)).save(tmp_path / "A" / "ok.png")
    Image.fromarray(np.full((2, 1), 100, np.uint8)).save(tmp_path / "A" / "tiny.png")
    Image.fromarray(np.full((30, 30), 100, np.uint8)).save(tmp_path / "b" / "blank.png")
    _photo((3, 25, 10, 20)).save(tmp_path / "b" / "ok.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    images, labels, report = load_class_folders(tmp_path, get_class_set("letters"))
    assert labels.tolist() == [0, 1] and len(report.skipped) == 3
    assert any("no ink" in r for r in report.skipped.values())
    with pytest.raises(Exception, match="not in class set 'digits'"):
        load_class_folders(tmp_path, get_class_set("digits"))
    # Training and studies load through load_sources, which says what it skipped, not only in
    # the card: one line, with the counts and the first file.
    capsys.readouterr()
    assert len(load_sources([f"folder@{tmp_path}"], "letters", dedupe=False)) == 2
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(f"note: folder@{tmp_path}: skipped 3 of 5 "
                                                 "images (1 unreadable, 2 without usable ink)")


def test_real_handwritten_folders(handwritten_dir):
    images, labels, report = load_class_folders(handwritten_dir, get_class_set("byclass"))
    assert len(images) >= 6190 and len(np.unique(labels)) == 62
    assert any(path.endswith("small_i_83.png") for path in report.skipped)
    # white ink on black: dark borders, bright strokes
    assert images[:, 0, :].mean() < 10 and images.mean() > 20


def test_imported_photos_read_like_emnist_to_a_validator_that_never_saw_a_photo(
        handwritten_dir, tmp_path):
    """The import is only worth having if its output looks like EMNIST: the shipped digits
    validator (trained on MNIST alone) must read the photographed digits (measured 96.5%); a
    wrong polarity, transposition or crop drops it far below."""
    from kepkreator.models.bundle import load_bundle
    for digit in "0123456789":
        (tmp_path / digit).symlink_to(handwritten_dir / digit)
    data = load_sources([f"folder@{tmp_path}"], "digits")
    assert 850 < len(data) <= 1000  # byte-identical photos are dropped
    predicted = load_bundle("default:digits", "validator").probabilities(data.images).argmax(1)
    assert (predicted == data.labels).mean() > 0.93


def test_edge_specks_do_not_shrink_the_character():
    """A cut line in a photo's corner must not stretch the crop (the character would shrink)."""
    def speckled(box, *specks):
        img = np.asarray(_photo(box, size=(60, 60)).convert("L")).copy()
        for y0, y1, x0, x1 in specks:
            img[y0:y1, x0:x1] = 30
        return Image.fromarray(img)
    clean = to_emnist_style(_photo((15, 45, 27, 33), size=(60, 60)))
    corner = to_emnist_style(speckled((15, 45, 27, 33), (57, 60, 0, 4)))  # blob in a corner
    np.testing.assert_array_equal(corner, clean)
    # An i's dot is not on the edge: it stays, so the ink box reaches up to it.
    dotted = to_emnist_style(speckled((25, 45, 27, 33), (15, 19, 28, 32)))
    assert np.flatnonzero(dotted.max(1) > 128)[0] < 6
    # A large blob on the edge is not a speck: the character may touch the frame.
    edge_bar = to_emnist_style(speckled((15, 45, 27, 33), (0, 60, 0, 8)))
    cols = np.flatnonzero(edge_bar.max(0) > 128)
    assert cols[-1] - cols[0] > 10  # bar and stroke both in the frame, side by side
