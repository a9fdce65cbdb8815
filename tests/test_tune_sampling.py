"""tune-sampling: the scan chooses a latent scale and threshold on validation data, under a
fidelity floor, and the pipeline takes its choice as the default."""
import json

from kepkreator.data import load_sources
from pipeline.run import run
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import class_folders, make_tiny_bundles, small_mnist, write_spec


def test_tune_sampling_chooses_on_validation_and_sets_the_pipeline_default(tmp_path, mnist_dir):
    small = small_mnist(tmp_path / "mnist", mnist_dir)
    gen, val = make_tiny_bundles(tmp_path)
    scan = tmp_path / "scan"
    args = ["tune-sampling", "--class-set", "digits", "--data", f"mnist:train@{small}",
            "--holdout", 0.25, "--out", scan, "--seeds", "0", "--scales", "1,3", "--steps", 8,
            "--generator", gen, "--validator", val, "--min-confidence", 0, "--update-card",
            "--min-judge-agreement", 0,  # the untrained tiny generator reaches no floor
            "--cas-tolerance", 0]  # the plain highest CAS
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads((scan / "sampling.json").read_text())
    rows = {r["latent_scale"]: r for r in report["scales"]}
    assert set(rows) == {1.0, 3.0} and 0 < report["validation_samples"] < 400
    best = max(rows.values(), key=lambda r: r["cas_mean"])["latent_scale"]
    assert report["best_latent_scale"] == best and "(chosen)" in result.stdout
    for scale in (1, 3):  # each scale's data came out of the pipeline with that scale
        manifest = json.loads((scan / f"synthetic-scale{scale}" / "manifest.json").read_text())
        assert manifest["spec"]["latent_scale"] == scale
    card = json.loads((gen / "card.json").read_text())
    assert card["sampling"]["latent_scale"] == best and len(card["sampling"]["scan"]) == 2
    # The card's choice is now the pipeline's default for this generator, while a filter is on
    # (the untrained validator keeps few: shortfalls tolerated); with every filter off, 1.
    for threshold, scale in ((0.01, best), (0, 1.0)):
        spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator=str(gen),
                          validator=str(val), counts={"per_class": 3}, min_confidence=threshold)
        assert run(["--spec", str(spec), "--out", str(tmp_path / "out"), "--overwrite",
                    "--shortfall_tolerance", "1"]).manifest["spec"]["latent_scale"] == scale
    # With --thresholds the scan is a grid (the shipped models: the untrained tiny validator is
    # never confident), and the card entry records the threshold chosen too.
    from kepkreator.sampling import sampling_card_entry
    result = run_cli("tune-sampling", "--class-set", "digits", "--data", f"mnist:train@{small}",
                     "--holdout", 0.25, "--out", tmp_path / "grid", "--seeds", "0", "--steps", 8,
                     "--scales", "1", "--thresholds", "0.5,0.999", "--cas-tolerance", 0)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "grid" / "sampling.json").read_text())
    rows = {r["min_confidence"]: r for r in report["scales"]}
    assert set(rows) == {0.5, 0.999} and rows[0.999]["acceptance_rate"] < rows[0.5]["acceptance_rate"]
    for threshold, row in rows.items():  # as the pipeline counts it, not the quota-capped kept
        metrics = json.loads((tmp_path / "grid" / f"synthetic-scale1-conf{threshold:g}"
                              / "metrics.json").read_text())
        assert row["acceptance_rate"] == metrics["passed_filter"] / metrics["generated"]
    # Both settings meet the default fidelity floor (the judge agrees with >= 99.8% of the
    # kept labels at scale 1), so the choice is by CAS; the table shows the judge's figures.
    assert report["floor_met"] and report["fidelity_floor"]["judge_agreement"] == 0.998
    assert all(r["judge_agreement"] >= 0.998 and r["density"] > 0 for r in rows.values())
    assert all(0 < r["precision"] <= 1 and 0 < r["recall"] <= 1 for r in rows.values())
    assert "| judge agrees | precision | recall | density | coverage |" in result.stdout
    best = max(rows.values(), key=lambda r: r["cas_mean"])["min_confidence"]
    assert report["best_min_confidence"] == best
    assert sampling_card_entry(report)["min_confidence"] == best
    assert "second_validator" not in sampling_card_entry(report)
    assert sampling_card_entry(report, "default:digits")["second_validator"] == "default:digits"
    manifest = json.loads((tmp_path / "grid" / "synthetic-scale1-conf0.999" / "manifest.json")
                          .read_text())
    assert manifest["spec"]["min_confidence"] == 0.999
    # The scan of the shipped generator filtered as the pipeline does: with the card's second
    # validator.
    assert manifest["spec"]["second_validator"] == "default:digits"
    # A precision floor no setting meets (real images score about 0.95): the cached runs are
    # chosen again, by fidelity, and the report says the floor was missed.
    again = run_cli("tune-sampling", "--class-set", "digits", "--data", f"mnist:train@{small}",
                    "--holdout", 0.25, "--out", tmp_path / "grid", "--seeds", "0", "--steps", 8,
                    "--scales", "1", "--thresholds", "0.5,0.999", "--min-precision", 0.9999)
    assert again.returncode == 0, again.stderr
    missed = json.loads((tmp_path / "grid" / "sampling.json").read_text())
    assert not missed["floor_met"] and missed["fidelity_floor"]["precision"] == 0.9999
    assert "no setting meets it" in again.stdout
    # The realism filter's strength is a third dimension of the grid: its runs are cached
    # apart from the unfiltered ones (reused here), and the card entry carries a realism choice.
    realism = run_cli("tune-sampling", "--class-set", "digits", "--data",
                      f"mnist:train@{small}", "--holdout", 0.25, "--out", tmp_path / "grid",
                      "--seeds", "0", "--steps", 8, "--scales", "1", "--thresholds", "0.5",
                      "--realism", "off,0.8", "--min-judge-agreement", 0)
    assert realism.returncode == 0, realism.stderr
    assert "reusing the finished dataset in" in realism.stderr
    report = json.loads((tmp_path / "grid" / "sampling.json").read_text())
    rows = {r["realism"]: r for r in report["scales"]}
    assert set(rows) == {None, 0.8} and rows[0.8]["acceptance_rate"] < rows[None]["acceptance_rate"]
    manifest = json.loads((tmp_path / "grid" / "synthetic-scale1-conf0.5-realism0.8"
                           / "manifest.json").read_text())
    assert manifest["spec"]["realism"] == 0.8
    entry = sampling_card_entry({**report, "best_realism": 0.8})
    assert entry["realism"] == 0.8 and "realism" not in sampling_card_entry(
        {**report, "best_realism": None})
    assert_one_line_error(run_cli(*args[:-2], "--realism", "off,strict"),
                          "is not a comma-separated list of off and numbers")
    # Choosing on the test set would leak it into the reported numbers: refused.
    leak = [a for a in args if a not in ("--holdout", 0.25)] + ["--eval-data", f"mnist:test@{small}"]
    assert_one_line_error(run_cli(*leak), "the scan chooses on validation data")


def test_scan_split_keeps_another_studys_test_holdout_out(mnist_dir):
    """Letters: the study tests on the data's 10% hash holdout, so the scan must choose elsewhere."""
    from kepkreator.data.splits import hash_split, image_hashes
    from kepkreator.downstream import DownstreamConfig
    from kepkreator.sampling import scan_split
    cfg = DownstreamConfig(class_set="digits", data=[f"mnist:test@{mnist_dir}"], holdout=0.1,
                           out="unused", reserve_holdout=0.2)
    train, validation, info = scan_split(cfg)
    data = load_sources(cfg.data, "digits")
    reserved = set(image_hashes(data.images[hash_split(data.images, 0.2, 0)]).tolist())
    assert info["reserved"] == len(reserved) and 1500 < len(reserved) < 2500
    assert not reserved & set(image_hashes(validation.images).tolist())
    assert not reserved & set(image_hashes(train.images).tolist())
    assert len(train) + len(validation) + len(reserved) == len(data)
    assert 0.07 < len(validation) / (len(train) + len(validation)) < 0.13


def test_a_scan_without_every_class_is_refused_before_out_exists(tmp_path):
    """Setting b asks for as many samples of a class as it has real images: a class without any
    made a pipeline spec the scan itself had written fail ('counts['3'] must be at least 1')."""
    result = run_cli("tune-sampling", "--class-set", "digits", "--data",
                     class_folders(tmp_path / "data", "012", 20), "--holdout", "0.2", "--out",
                     tmp_path / "scan")
    assert_one_line_error(result, "7 of the 10 classes of 'digits' have no training images")
    assert not (tmp_path / "scan").exists()


def test_a_named_threshold_gets_the_scale_the_cards_scan_found_best_there():
    """A widened scale chosen for a strict filter is not handed to a laxer one: at a threshold
    the user names, the best CAS among the scan's rows that met the fidelity floor."""
    from kepkreator.models.card import card_latent_scale
    row = lambda s, t, cas, judge: {"latent_scale": s, "min_confidence": t, "cas_mean": cas,
                                    "judge_agreement": judge}
    card = {"sampling": {"latent_scale": 1.5, "min_confidence": 0.99,
                         "fidelity_floor": {"judge_agreement": 0.998, "density": 0.0},
                         "scan": [row(1.0, 0.9, 0.976, 0.9999), row(1.25, 0.9, 0.983, 0.9989),
                                  row(1.5, 0.9, 0.9835, 0.9956), row(1.5, 0.99, 0.984, 0.9982),
                                  row(2.0, 0.999, 0.9835, 0.9989)]}}
    assert card_latent_scale(card) == 1.5
    assert card_latent_scale(card, 0.99) == 1.5
    assert card_latent_scale(card, 0.9) == 1.25  # 1.5 has the higher CAS but missed the floor
    assert card_latent_scale(card, 0.999) == 2.0
    assert card_latent_scale(card, 0.5) == 1.5  # not scanned: the card's choice
    assert card_latent_scale({}, 0.9) == 1.0
    # A realism strength the scan did not try adds a filter to the threshold's own choice; it
    # is not handed the card's wider scale (1.5 at 0.9 missed the judge's floor).
    assert card_latent_scale(card, 0.9, 1.0) == 1.25
    card["sampling"]["scan"].append({**row(1.5, 0.9, 0.9845, 0.9985), "realism": 1.0})
    assert card_latent_scale(card, 0.9, 1.0) == 1.5  # scanned with the filter: its own rows
    assert card_latent_scale(card, 0.9) == 1.25


def test_settings_within_the_cas_tolerance_are_tied_and_the_widest_coverage_wins():
    """A CAS lead smaller than a seed's spread does not pick a narrower, less varied setting:
    the scan's report, its card entry and a named threshold all follow the same rule."""
    from kepkreator.models.card import card_latent_scale, choose_setting
    row = lambda s, t, cas, judge, coverage: {"latent_scale": s, "min_confidence": t,
                                              "cas_mean": cas, "judge_agreement": judge,
                                              "coverage": coverage}
    rows = [row(1.25, 0.9, 0.9831, 0.9993, 0.905), row(1.5, 0.99, 0.9833, 0.9991, 0.845),
            row(1.75, 0.99, 0.9835, 0.9984, 0.767), row(1.75, 0.9, 0.9855, 0.9943, 0.725),
            row(1.0, 0.9, 0.9772, 0.9999, 0.932)]
    floor = {"judge_agreement": 0.998, "density": 0.0}
    assert choose_setting(rows, floor) is rows[2]  # no tolerance: the highest CAS
    assert choose_setting(rows, floor, 0.001) is rows[0]  # 1.0 is 0.6 pp behind: not tied
    assert choose_setting(rows, floor, 0.00025) is rows[1]  # 1.25 is 0.04 pp behind: not tied
    assert choose_setting(rows, {"judge_agreement": 0.9999}, 0.001) is rows[4]
    assert choose_setting(rows, {"judge_agreement": 1.0}) is None
    card = {"sampling": {"latent_scale": 1.25, "fidelity_floor": floor, "cas_tolerance": 0.001,
                         "scan": rows}}
    assert card_latent_scale(card, 0.99) == 1.5
    assert card_latent_scale({"sampling": {**card["sampling"], "cas_tolerance": 0}}, 0.99) == 1.75
