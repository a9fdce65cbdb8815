"""The CLI as a user meets it: bad input is one line on stderr and a non-zero exit."""
import gzip
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "import-model"):
        assert command in result.stdout


def test_unknown_class_set(tmp_path):
    result = run_cli("train", "validator", "--class-set", "klingon", "--data",
                     f"mnist:train@{tmp_path}", "--out", tmp_path / "v")
    assert_one_line_error(result, "unknown class set 'klingon'")


def test_bad_source_string(tmp_path):
    result = run_cli("train", "gan", "--class-set", "digits", "--data", "mnist@x", "--out", tmp_path / "g")
    assert_one_line_error(result, "lacks a split")


def test_threshold_option_forms(tmp_path):
    from kepkreator.cli.options import confidence_option as _confidence
    assert _confidence(None, None, "0.5") == 0.5
    assert _confidence(None, None, "0.9,I=0.5,L=0") == {"default": 0.9, "I": 0.5, "L": 0.0}
    for bad, message in (("0.9,I=high", "optionally followed by CLASS=threshold pairs"),
                         ("1", "min_confidence must be a number in [0, 1), got 1.0"),
                         ("0.9,I=1.5", "min_confidence.I must be a number in [0, 1), got 1.5"),
                         ("I=0.5", "needs a default threshold first")):
        result = run_cli("tune-sampling", "--class-set", "letters", "--data",
                         f"folder@{tmp_path}", "--out", tmp_path / "s", "--min-confidence", bad)
        assert_one_line_error(result, message)


def test_scan_grid_is_checked_before_any_data_is_read(tmp_path):
    # The data folder does not exist: the grid's error must come first.
    for option, value, message in (("--scales", "nan", "latent scales must be numbers in (0, 10]"),
                                    ("--scales", "1,20", "latent scales must be numbers in (0, 10]"),
                                    ("--thresholds", "0.5,1.5", "thresholds must be numbers in [0, 1)"),
                                    ("--thresholds", "nan", "thresholds must be numbers in [0, 1)"),
                                    ("--scales", "1,2,1.0", "a latent scale is listed twice"),
                                    ("--thresholds", "0.5,0.5", "a threshold is listed twice"),
                                    ("--realism", "off,-1", "realism strengths must be off or"),
                                    ("--realism", "nan", "realism strengths must be off or"),
                                    ("--realism", "off,1,off",
                                     "a realism strength is listed twice: off,1,off"),
                                    ("--seeds", "0,1,0", "'0,1,0' lists a seed twice")):
        result = run_cli("tune-sampling", "--class-set", "digits", "--data",
                         f"mnist:train@{tmp_path / 'nowhere'}", "--holdout", "0.1",
                         "--out", tmp_path / "s", option, value)
        assert_one_line_error(result, message)


@pytest.mark.parametrize("argv, message", [
    (["train", "gan", "--g-lr", "nan"], "Invalid value for '--g-lr': 'nan' is not a finite number"),
    (["train", "gan", "--d-lr", "-0.001"], "Invalid value for '--d-lr': -0.001 is not in the "
                                           "range x>0"),
    (["train", "gan", "--aux-weight", "inf"], "'inf' is not a finite number"),
    (["train", "gan", "--mode-seeking", "nan"], "'nan' is not a finite number"),
    (["train", "validator", "--holdout", "nan"], "'nan' is not a finite number"),
    (["generate", "--spec", "s.yaml", "--shortfall-tolerance", "nan"], "not a finite number"),
    (["train", "gan", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range "
                                       "0<=x<=4294967295"),
    (["train", "validator", "--subset-seed", str(2**32)], "is not in the range 0<=x<=4294967295"),
    (["render", "hi", "-o", "h.png", "--seed", "-1"], "'--seed': -1 is not in the range"),
    (["evaluate", "--generator", "default:digits", "--validator", "default:digits", "--seed",
      "-5"], "'--seed': -5 is not in the range"),
    (["downstream", "--class-set", "digits", "--data", "mnist:train@nowhere", "--out", "o",
      "--seeds", "0,-1"], "'0,-1' is not a comma-separated list of seeds"),
    (["generate", "--spec", "s.yaml", "--max_units_per_batch=0"],
     "argument --max_units_per_batch: '0' is not in [1, inf]"),
    (["generate", "--spec", "s.yaml", "--intra_op_threads=many"],
     "argument --intra_op_threads: 'many' is not a number"),
])
def test_a_number_option_refuses_nan_and_out_of_range_values(tmp_path, capsys, argv, message):
    """click's FloatRange lets NaN through and plain float takes any sign: a NaN learning rate
    trained a bundle of NaN weights without a word; a negative seed was a numpy traceback."""
    from kepkreator.cli import main
    if argv[0] == "train":
        argv = argv + ["--class-set", "digits", "--data", f"mnist:train@{tmp_path}", "--out",
                       str(tmp_path / "model")]
    elif argv[0] != "generate":
        argv = [str(tmp_path / a) if a in ("h.png", "o") else a for a in argv]
    else:
        (tmp_path / "s.yaml").write_text("class_set: digits\ncounts: {per_class: 1}\n")
        argv = [a.replace("s.yaml", str(tmp_path / "s.yaml")) for a in argv]
        argv += ["--out", str(tmp_path / "data")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kepkreator: error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["s.yaml"])


def test_missing_init_from_bundle(tmp_path):
    result = run_cli("train", "gan", "--class-set", "digits", "--data", f"mnist:train@{tmp_path}",
                     "--init-from", tmp_path / "nowhere", "--out", tmp_path / "g")
    assert_one_line_error(result, "bundle not found")
    assert not (tmp_path / "g").exists()


def test_init_from_a_generator_of_another_architecture(tmp_path, peers_dir, mnist_dir):
    assert run_cli("import-model", peers_dir / "KepKreator/num-model/generator.h5", "--card",
                   ROOT / "jobs/peers/kepkreator-num-model.card.json", "--out",
                   tmp_path / "peer").returncode == 0
    result = run_cli("train", "gan", "--class-set", "digits", "--data", f"mnist:test@{mnist_dir}",
                     "--max-train-samples", "128", "--init-from", tmp_path / "peer",
                     "--out", tmp_path / "g")
    assert_one_line_error(result, "cannot start from a generator with 6 weighted layers")
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.work").exists()


def test_missing_data_directory(tmp_path):
    result = run_cli("train", "validator", "--class-set", "digits", "--data",
                     f"mnist:train@{tmp_path / 'nowhere'}", "--out", tmp_path / "v")
    assert_one_line_error(result, "data directory not found")
    assert not (tmp_path / "v" / "card.json").exists()


def test_corrupt_data_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03junk"))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01"))
    result = run_cli("train", "validator", "--class-set", "digits", "--data",
                     f"mnist:train@{tmp_path}", "--out", tmp_path / "v")
    assert_one_line_error(result, "train-images-idx3-ubyte.gz")


def test_missing_bundle_and_mismatched_card(tmp_path, peers_dir):
    result = run_cli("evaluate", "--generator", tmp_path / "none", "--validator", tmp_path / "none")
    assert_one_line_error(result, "bundle not found")
    card = json.loads((ROOT / "jobs/peers/kepkreator-validation-cnn.card.json").read_text())
    card["class_set"] = "letters"
    (tmp_path / "card.json").write_text(json.dumps(card))
    result = run_cli("import-model", peers_dir / "KepKreator/validation_cnn.hdf5",
                     "--card", tmp_path / "card.json", "--out", tmp_path / "bundle")
    assert_one_line_error(result, "model has 10 outputs, class set 'letters' has 26")


def test_import_and_evaluate_a_peer(tmp_path, peers_dir):
    for model, name in [("KepKreator/num-model/generator.h5", "kepkreator-num-model"),
                        ("KepKreator/validation_cnn.hdf5", "kepkreator-validation-cnn")]:
        result = run_cli("import-model", peers_dir / model, "--card",
                         ROOT / f"jobs/peers/{name}.card.json", "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", "--generator", tmp_path / "kepkreator-num-model", "--validator",
                     tmp_path / "kepkreator-validation-cnn", "-n", "200", "--json-out",
                     tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["generated"]["samples"] == 200 and "BCIS" in result.stdout
    mixed = run_cli("evaluate", "--generator", tmp_path / "kepkreator-num-model", "--validator",
                    tmp_path / "kepkreator-num-model")
    assert_one_line_error(mixed, "is a generator bundle, a validator is needed")


def test_evaluate_samples_at_the_cards_latent_scale(tmp_path, peers_dir):
    """The numbers must describe the data the pipeline makes, which uses the card's scale."""
    for model, name in [("KepKreator/num-model/generator.h5", "kepkreator-num-model"),
                        ("KepKreator/validation_cnn.hdf5", "kepkreator-validation-cnn")]:
        assert run_cli("import-model", peers_dir / model, "--card",
                       ROOT / f"jobs/peers/{name}.card.json", "--out",
                       tmp_path / name).returncode == 0
    generator = tmp_path / "kepkreator-num-model"
    card = json.loads((generator / "card.json").read_text())
    card["sampling"] = {"latent_scale": 3.0}
    (generator / "card.json").write_text(json.dumps(card))
    reports = {}
    for name, extra in [("card", ()), ("one", ("--latent-scale", "1"))]:
        result = run_cli("evaluate", "--generator", generator, "--validator",
                         tmp_path / "kepkreator-validation-cnn", "-n", "100",
                         "--json-out", tmp_path / f"{name}.json", *extra)
        assert result.returncode == 0, result.stderr
        assert "latent scale" in result.stdout
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["card"]["latent_scale"] == 3.0 and reports["one"]["latent_scale"] == 1.0
    assert reports["card"]["generated"]["mean_confidence"] != \
        reports["one"]["generated"]["mean_confidence"]


def test_copying_check_falls_back_on_the_cards_holdout(emnist_dir, tmp_path):
    """The shipped letters generator was trained with a 10% hash holdout: given its data
    without --real, evaluate compares against the images that holdout kept out, and says so."""
    result = run_cli("evaluate", "--generator", "default:letters", "--validator",
                     "default:letters", "-n", "260", "--train-data",
                     f"emnist-letters:test@{emnist_dir}", "--json-out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "the card's holdout kept out of --train-data" in result.stderr
    assert "the generator's card records 114,930" in result.stderr  # one source of its six
    report = json.loads((tmp_path / "r.json").read_text())
    held_out, trained = report["real"]["samples"], report["copying"]["train_samples"]
    assert report["copying"]["real_compared"] == held_out
    assert 0.07 < held_out / (held_out + trained) < 0.13
    assert report["real"]["holdout"] == {"holdout_fraction": 0.1, "split_seed": 0}


def test_an_unwritable_report_path_is_refused_before_measuring(tmp_path):
    """The --real path does not exist: the report's error must come first, not after minutes."""
    (tmp_path / "file").write_text("")
    for extra in ([], ["--generator", "default:digits"]):
        result = run_cli("evaluate", *extra, "--validator", "default:digits", "--real",
                         f"mnist:test@{tmp_path / 'nowhere'}", "--json-out",
                         tmp_path / "file" / "deeper" / "r.json")
        assert_one_line_error(result, "--json-out", "a file where a folder is needed")
    assert (tmp_path / "file").read_text() == "" and sorted(tmp_path.iterdir()) == [tmp_path / "file"]


def test_evaluate_without_a_generator_measures_the_validator(mnist_dir, tmp_path):
    """The validator alone on real data reproduces what training recorded in its card, and names
    what it confuses; generator-only options are one-line errors rather than ignored."""
    result = run_cli("evaluate", "--validator", "default:digits",
                     "--real", f"mnist:test@{mnist_dir}", "--json-out", tmp_path / "v.json")
    assert result.returncode == 0, result.stderr
    assert "most confused:" in result.stdout
    report = json.loads((tmp_path / "v.json").read_text())
    card = json.loads((ROOT / "kepkreator/assets/digits/validator/card.json").read_text())
    assert report["real"]["samples"] == 10000
    assert report["real"]["agreement"] == pytest.approx(card["metrics"]["eval_accuracy"], abs=1e-4)
    per_class = [report["real"]["per_class"][d]["agreement"] for d in "0123456789"]
    assert per_class == pytest.approx(card["metrics"]["eval_per_class_accuracy"], abs=1e-4)
    errors = 10000 - round(10000 * report["real"]["agreement"])
    assert 0 < sum(c["count"] for c in report["confusions"]) <= errors
    assert_one_line_error(run_cli("evaluate", "--validator", "default:digits", "--real",
                                  f"mnist:test@{mnist_dir}", "--train-data", "x", "-n", "10"),
                          "--samples, --train-data measure a generator")
    assert_one_line_error(run_cli("evaluate", "--validator", "default:digits"), "give --real")
    # --real-holdout: exactly the images `train --holdout 0.1` would have held out.
    from kepkreator.training.common import split_data
    result = run_cli("evaluate", "--validator", "default:digits", "--real",
                     f"mnist:test@{mnist_dir}", "--real-holdout", "0.1",
                     "--json-out", tmp_path / "h.json")
    assert result.returncode == 0, result.stderr
    held = json.loads((tmp_path / "h.json").read_text())["real"]
    _, expected, _ = split_data([f"mnist:test@{mnist_dir}"], "digits", 0.1, [], 0)
    assert held["samples"] == len(expected) and 800 < len(expected) < 1200
    assert held["holdout"] == {"holdout_fraction": 0.1, "split_seed": 0}


def test_quiet_tensorflow_import_still_passes_on_what_is_not_noise():
    """The capture around the TensorFlow import must drop only the absl notice: a real warning
    or a failing import has to reach the user."""
    script = ("import os, sys\n"
              "from kepkreator.quiet import stderr_without\n"
              "with stderr_without(('oneDNN custom operations',)):\n"
              "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on\\n')\n"
              "    os.write(2, b'a real warning\\n')\n"
              "    print('from python', file=sys.stderr)\n"
              "    raise ImportError('broken install')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert "oneDNN" not in result.stderr, result.stderr
    assert "a real warning\nfrom python\n" in result.stderr, result.stderr
    assert "ImportError: broken install" in result.stderr, result.stderr


def test_serve_on_a_taken_port_is_one_line_without_serving_on(tmp_path):
    """uvicorn printed our "serving on" and then its own bind error, rc 3."""
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", port, timeout=120)
    assert_one_line_error(result, f"cannot serve on 127.0.0.1:{port}: Address already in use")
    assert "serving on" not in result.stderr


@pytest.mark.parametrize("args", [
    ["render", "ab", "-o", "gs://bucket/ab.png"],
    ["render", "ab", "-o", "ab.png", "--json-out", "gs://bucket/ab.json"],
    ["inspect", "gs://bucket/dataset"],
    ["evaluate", "--generator", "gs://bucket/gen", "--validator", "default:digits", "-n", "10"],
    ["evaluate", "--validator", "default:digits", "--real", "dataset@gs://bucket/dataset"],
    ["train", "gan", "--class-set", "digits", "--data", "mnist:train@/nowhere", "--out", "g",
     "--workdir", "gs://bucket/work"],
])
def test_a_url_where_a_local_path_is_needed_is_refused(tmp_path, args):
    """Path folds 'gs://b/x' into 'gs:/b/x': a render wrote a local folder named 'gs:' and
    reported success; reads named a path the user never typed."""
    result = run_cli(*args, cwd=tmp_path)
    url = next(a for a in args if "gs://" in a).split("@")[-1]
    assert_one_line_error(result, f"{url}: gs:// paths are not read or written here")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["train", "validator", "--class-set", "digits", "--data", "mnist:train@/nowhere",
      "--out", ""], "Invalid value for '--out': an empty path"),
    (["render", "ab", "-o", ""], "Invalid value for '-o' / '--out': an empty path"),
    (["train", "gan", "--class-set", "digits", "--data", "mnist:train@/nowhere", "--out", "g",
      "--workdir", " "], "Invalid value for '--workdir': an empty path"),
    (["generate", "--spec", ROOT / "jobs/demo/digits.yaml", "--out", ""], "--out is empty"),
    (["generate", "--spec", "gs://bucket/spec.yaml", "--out", "o"],
     "--spec gs://bucket/spec.yaml: gs:// paths are not read or written here"),
])
def test_an_empty_output_path_or_a_remote_spec_is_refused(tmp_path, args, message):
    """Path("") is the working directory: train validator --out "" wrote its bundle there."""
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["evaluate", "--validator", "default:digits", "-n", "1000001"],
    ["train", "gan", "--class-set", "digits", "--data", "mnist:train@/nowhere", "--out", "g",
     "--eval-per-class", "100001"],
])
def test_in_memory_sample_counts_are_bounded(tmp_path, args):
    """Held in memory at once: -n 100000000 would need 78 GB of images alone."""
    result = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, "is not in the range 1<=x<=")
    assert list(tmp_path.iterdir()) == []
