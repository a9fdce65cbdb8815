"""The lean runtime: generation on Keras-on-JAX with TensorFlow unavailable, the same samples
as on TensorFlow, TFRecords without TensorFlow, and one line for what needs TensorFlow."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kepkreator.data.example_proto import decode_example, encode_example
from kepkreator.data.generated import verify_folder
from tests.conftest import ROOT, assert_one_line_error
from tests.pipeline_fixtures import class_folders, write_spec

pytest.importorskip("jax", reason="jax is not installed (the runtime's requirements.txt pins it)")

# The CLI in a process where `import tensorflow` fails, as on an install without it.
WITHOUT_TENSORFLOW = ("import sys; sys.modules['tensorflow'] = None; "
                      "from kepkreator.cli import main; sys.exit(main(sys.argv[1:]))")


def cli_without_tensorflow(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def test_tfrecord_examples_are_tensorflows_bytes():
    tf_pb = pytest.importorskip("tensorflow.core.example.example_pb2",
                                reason="TensorFlow is not installed to compare with")
    from tensorflow.core.example import feature_pb2 as fp
    for image, label in [(b"", 0), (b"\x89PNG" + bytes(range(256)) * 20, 61), (b"x", -3),
                         (b"y" * 130, 2 ** 40)]:
        theirs = tf_pb.Example(features=fp.Features(feature={
            "image": fp.Feature(bytes_list=fp.BytesList(value=[image])),
            "label": fp.Feature(int64_list=fp.Int64List(value=[label]))})).SerializeToString(
                deterministic=True)
        assert encode_example({"label": label, "image": image}) == theirs
        assert decode_example(theirs) == {"image": [image], "label": [label]}


def test_the_runtime_pins_no_tensorflow():
    pins = (ROOT / "requirements.txt").read_text().lower()
    assert not re.search(r"^tensorflow", pins, re.MULTILINE)
    assert re.search(r"^jax==", pins, re.MULTILINE) and re.search(r"^keras==", pins, re.MULTILINE)
    setup = (ROOT / "setup.py").read_text()
    runtime = setup[setup.index("install_requires"):setup.index("extras_require")]
    assert "tensorflow" not in runtime.lower() and "jax" in runtime


def shard_hashes(out):
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return [f["sha256"] for s in manifest["shards"] for f in s["files"].values()]


def test_generation_without_tensorflow_runs_on_jax_and_draws_the_same_samples(tmp_path):
    import pyarrow.parquet as pq
    spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator="default:digits",
                      validator="default:digits", judge="default", counts={"per_class": 30},
                      seed=5, shards=2, unit_size=64)
    runs = {}
    # Again on two threads that share each model: the same bytes.
    for name, beam in (("jax", []), ("jax-again", ["--direct_num_workers", 2])):
        result = cli_without_tensorflow("generate", "--spec", spec, "--out", tmp_path / name,
                                        *beam)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        runs[name] = tmp_path / name
    manifest, problems = verify_folder(runs["jax"])
    assert problems == [] and manifest["versions"]["keras_backend"] == "jax"
    assert "tensorflow" not in manifest["versions"] and "tensorflow-cpu" not in manifest["versions"]
    assert shard_hashes(runs["jax"]) == shard_hashes(runs["jax-again"])

    # On TensorFlow (this process's backend) the same candidates are drawn and kept: the two
    # backends differ in a pixel's last level now and then, not in what was asked or accepted.
    tf_out = tmp_path / "tensorflow"
    result = subprocess.run([sys.executable, "-m", "kepkreator.cli", "generate", "--spec", spec,
                             "--out", tf_out], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads((tf_out / "manifest.json").read_text())["versions"]["keras_backend"] == \
        "tensorflow"
    on_jax, on_tf = (pq.read_table(d / "data").to_pydict() for d in (runs["jax"], tf_out))
    assert on_jax["sample_id"] == on_tf["sample_id"] and on_jax["label"] == on_tf["label"]
    same = sum(a["bytes"] == b["bytes"] for a, b in zip(on_jax["image"], on_tf["image"]))
    assert same >= 0.95 * len(on_tf["image"])


def test_what_needs_tensorflow_says_so_in_one_line(tmp_path):
    data = class_folders(tmp_path / "data", "0123456789", 3)
    result = cli_without_tensorflow("train", "gan", "--class-set", "digits", "--data", data,
                                    "--out", tmp_path / "g")
    assert_one_line_error(result, "needs TensorFlow", "kepkreator[train]")
    assert not (tmp_path / "g").exists()
    assert cli_without_tensorflow("train", "gan", "--help").returncode == 0
