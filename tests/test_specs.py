"""Spec parsing and work-unit planning: pure Python, no runner."""
import json
from pathlib import Path

import numpy as np
import pytest

from kepkreator.data import write_idx
from pipeline.handlers import ScoredBatch
from pipeline.job import SpecError, apportion
from pipeline.specs import MAX_PER_CLASS, parse_spec, read_specs
from pipeline.units import TOP_UP_QUANTUM, WorkUnit, candidate_labels, expand, top_up
from pipeline.transforms import select_accepted

BASE = {"class_set": "digits", "generator": "g", "validator": "v", "counts": {"per_class": 10}}


def spec(**changes):
    data = {**BASE, **changes}
    return parse_spec({k: v for k, v in data.items() if v is not None})


def test_defaults_and_count_forms():
    job = spec()
    assert job.counts == {c: 10 for c in range(10)} and job.formats == ("parquet", "tfrecord")
    assert job.min_confidence is None and job.latent_scale is None  # the generator card's
    job = job.with_card_defaults({}, "g")
    assert job.min_confidence == 0.9 and job.latent_scale == 1.0
    assert job.splits == (("train", 1.0),) and job.orientation == "upright"
    assert spec(counts={"7": 5, 3: 2}).counts == {7: 5, 3: 2}
    letters = spec(class_set="letters", counts={"a": 1, "B": 2})
    assert letters.counts == {0: 1, 1: 2}


@pytest.mark.parametrize("changes, message", [
    ({"class_set": "klingon"}, "unknown class set 'klingon'"),
    ({"counts": {"A": 5}}, "class 'A' is not in class set 'digits'"),
    ({"counts": {"per_class": -1}}, "counts.per_class must be at least 1"),
    ({"counts": {"per_class": 0}}, "counts.per_class must be at least 1"),
    ({"counts": {"per_class": 2.5}}, "must be a whole number"),
    ({"counts": {"per_class": "ten"}}, "must be a whole number"),
    ({"counts": {"per_class": MAX_PER_CLASS + 1}}, "must be at most 10,000,000"),
    ({"counts": {"3": True}}, "must be a whole number, got true"),
    ({"min_confidence": [0.5]}, "min_confidence must be a number in [0, 1), got [0.5]"),
    ({"counts": []}, "counts must be"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"generator": None}, "missing required key 'generator'"),
    ({"formats": ["parquet", "csv"]}, "unknown format 'csv'"),
    ({"label_policy": "guess"}, "label_policy must be one of"),
    ({"min_confidence": 1.5}, "min_confidence must be a number in [0, 1)"),
    ({"min_confidence": {"A": 0.5}}, "min_confidence: class 'A' is not in class set 'digits' "
                                     "(or use the key default)"),
    ({"min_confidence": {"3": "high"}}, "min_confidence.3 must be a number in [0, 1), got 'high'"),
    ({"min_confidence": {"default": 1}}, "min_confidence.default must be a number in [0, 1)"),
    ({"shards": 0}, "shards must be at least 1"),
    ({"orientation": "sideways"}, "orientation must be upright or emnist"),
    ({"split": "../x"}, "split must be a simple lower-case name"),
    ({"split": {"train": 0.9, "test": 0.2}}, "split fractions must add up to 1, got 1.1"),
    ({"split": {"train": 1.0, "dev": 0}}, "split dev: fraction must be a number in (0, 1], got 0"),
    ({"split": {"train": 0.5, "x-y": 0.5}}, "split must be a simple lower-case name like train or test, got 'x-y'"),
    ({"split": {"train": 0.5, "Train": 0.5}}, "split must be a simple lower-case name like train or test, got 'Train'"),
    ({"split": "tr\u00e4in"}, "split must be a simple lower-case name"),
    ({"name": "Digits"}, "name must be lower_snake_case, got 'Digits'"),
    ({"name": "z\u00e4hler"}, "name must be lower_snake_case"),
    ({"split": {}}, "split: give a name, or a map of split names to fractions"),
    ({"counts": {"balance_to": {"labels": "nowhere.gz", "target": 5}}},
     "balance_to labels not found"),
    ({"counts": {"balance_to": {"labels": "x"}}}, "needs exactly the keys labels and target"),
])
def test_bad_specs(changes, message):
    with pytest.raises(SpecError) as info:
        spec(**changes)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_files(tmp_path):
    (tmp_path / "a.yaml").write_text("class_set: digits\ncounts: [1, 2\n")
    with pytest.raises(SpecError, match="malformed YAML at line"):
        read_specs(str(tmp_path / "a.yaml"))
    (tmp_path / "b.json").write_text('{"class_set": "digits",}')
    with pytest.raises(SpecError, match="malformed JSON"):
        read_specs(str(tmp_path / "b.json"))
    (tmp_path / "c.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        read_specs(str(tmp_path / "c.yaml"))
    with pytest.raises(SpecError, match="spec file not found"):
        read_specs(str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="no spec files match"):
        read_specs(str(tmp_path / "none-*.yaml"))


def test_a_key_given_twice_is_refused(tmp_path):
    """YAML and JSON both keep the last of a repeated key without a word: a spec with `counts`
    twice quietly ran the second one."""
    head = "class_set: digits\ngenerator: default:digits\nvalidator: default:digits\n"
    (tmp_path / "a.yaml").write_text(head + "counts: {per_class: 5}\ncounts: {per_class: 7}\n")
    with pytest.raises(SpecError, match=r"a.yaml: key 'counts' is given twice \(line 5\)$"):
        read_specs(str(tmp_path / "a.yaml"))
    (tmp_path / "b.yaml").write_text(head + "counts: {'1': 5, '1': 9}\n")
    with pytest.raises(SpecError, match=r"key '1' is given twice \(line 4\)"):
        read_specs(str(tmp_path / "b.yaml"))
    (tmp_path / "c.json").write_text('{"class_set": "digits", "counts": {"1": 5, "1": 9}}')
    with pytest.raises(SpecError, match="c.json: key '1' is given twice$"):
        read_specs(str(tmp_path / "c.json"))
    (tmp_path / "counts.json").write_text('{"0": 5, "0": 1}')
    with pytest.raises(SpecError, match="unreadable: key '0' is given twice"):
        spec(counts={"balance_to": {"labels": str(tmp_path / "counts.json"), "target": 4}})
    # A YAML merge ('<<') may be overridden on purpose; that is not a repeated key.
    (tmp_path / "d.yaml").write_text(head + "base: &base {per_class: 5}\n"
                                            "counts: {<<: *base, per_class: 3}\n")
    with pytest.raises(SpecError, match="unknown key 'base'"):  # got past the YAML reader
        read_specs(str(tmp_path / "d.yaml"))


def test_balance_to_from_idx_json_and_unreadable(tmp_path):
    write_idx(tmp_path / "labels.gz", np.array([1, 1, 1, 2, 26], np.uint8))  # EMNIST letters ids
    job = spec(class_set="letters", counts={"balance_to": {"labels": str(tmp_path / "labels.gz"),
                                                           "target": 3}})
    assert 0 not in job.counts and job.counts[1] == 2 and job.counts[25] == 2 and job.counts[2] == 3
    (tmp_path / "counts.json").write_text(json.dumps({"0": 5, "9": 1}))
    job = spec(counts={"balance_to": {"labels": str(tmp_path / "counts.json"), "target": 4}})
    assert 0 not in job.counts and job.counts[9] == 3 and job.counts[1] == 4
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnope")
    with pytest.raises(SpecError, match="balance_to labels .* corrupt"):
        spec(counts={"balance_to": {"labels": str(tmp_path / "bad.gz"), "target": 4}})


def test_the_shipped_example_specs_parse():
    """The job files a newcomer copies from must stay valid as the spec grows."""
    from pathlib import Path
    specs = sorted((Path(__file__).parent.parent / "jobs").glob("**/*.yaml"))
    assert specs
    for path in specs:
        assert expand(read_specs(str(path))), path


def test_relative_paths_are_read_from_the_spec_files_folder(tmp_path, monkeypatch):
    """Bundles and balance_to labels alike: the spec means the same from any working directory
    (bundles used to be looked up from the working directory, labels from the spec's folder)."""
    job_dir = tmp_path / "jobs" / "mine"
    job_dir.mkdir(parents=True)
    (job_dir / "counts.json").write_text(json.dumps({"0": 1}))
    (job_dir / "spec.yaml").write_text(json.dumps({
        **BASE, "generator": "bundles/gen", "validator": "default:digits",
        "counts": {"balance_to": {"labels": "counts.json", "target": 2}}}))
    monkeypatch.chdir(tmp_path)
    job = read_specs("jobs/mine/spec.yaml")
    assert job.generator == str(Path("jobs/mine/bundles/gen")) and job.validator == "default:digits"
    assert job.counts[0] == 1 and job.counts[5] == 2
    job = read_specs(str(job_dir / "spec.yaml"))
    assert job.generator == str(job_dir / "bundles" / "gen")


def test_glob_of_specs_adds_counts_and_rejects_disagreement(tmp_path):
    (tmp_path / "a.yaml").write_text(json.dumps({**BASE, "counts": {"1": 5}}))
    (tmp_path / "b.yaml").write_text(json.dumps({**BASE, "counts": {"1": 2, "2": 3}, "seed": 9}))
    job = read_specs(str(tmp_path / "*.yaml"))
    assert job.counts == {1: 7, 2: 3} and len(job.sources) == 2
    units = expand(job)
    assert {u.spec_index for u in units} == {0, 1}
    assert len({u.seed for u in units}) == len(units)  # every unit draws its own stream
    (tmp_path / "c.yaml").write_text(json.dumps({**BASE, "validator": "other"}))
    with pytest.raises(SpecError, match="validator differs"):
        read_specs(str(tmp_path / "*.yaml"))
    (tmp_path / "c.yaml").write_text(json.dumps({**BASE, "split": {"train": 0.5, "test": 0.5}}))
    with pytest.raises(SpecError, match=r'split differs from .*a.yaml \(\{"train": 0.5, "test": '
                                        r'0.5\} vs .train.\)'):
        read_specs(str(tmp_path / "*.yaml"))


def test_units_cover_counts_exactly():
    job = spec(counts={"3": 2500, "4": 10}, unit_size=1000)
    units = expand(job)
    assert sum(u.quota[3] for u in units) == 2500 and sum(u.quota[4] for u in units) == 10
    assert len(units) == 3 and max(u.wanted for u in units) <= 1000
    assert all(u.candidates > u.wanted for u in units)
    relabel = expand(spec(label_policy="relabel", unit_size=30))
    assert sum(sum(u.quota) for u in relabel) == 100
    assert all(set(candidate_labels(u)) <= set(range(10)) for u in relabel)


def test_every_unit_mixes_the_classes_in_random_order():
    """Units used to hold one class each, so the shards came out in class blocks: a reader
    taking the first rows, or shuffling with a small buffer, saw one or two digits."""
    units = expand(spec(counts={"3": 2490, "4": 10, "7": 500}, unit_size=1000))
    assert len(units) == 3
    for unit in units:
        assert unit.quota[4] in (3, 4) and unit.quota[7] in (166, 167)
        labels = candidate_labels(unit)
        assert len(labels) == unit.candidates
        assert np.bincount(labels, minlength=10)[[3, 4, 7]].tolist() == apportion(
            unit.candidates, unit.request)[[3, 4, 7]].tolist()
        assert all(np.bincount(labels[:200], minlength=10)[[3, 7]] > 0)  # no class blocks
        assert (candidate_labels(unit) == labels).all()  # seeded: a retry draws the same
    assert len({tuple(candidate_labels(u)[:50]) for u in units}) == 3  # each its own order


def test_splits_cut_every_class_exactly_and_draw_their_own_seeds(tmp_path):
    job = spec(counts={"3": 1001, "4": 9}, unit_size=100,
               split={"train": 0.8, "validation": 0.1, "test": 0.1})
    wanted = job.requested_per_split()
    assert [wanted[s][[3, 4]].tolist() for s in ("train", "validation", "test")] == [
        [801, 7], [100, 1], [100, 1]]
    units = expand(job)
    for split in ("train", "validation", "test"):
        mine = [u for u in units if u.split == split]
        assert all(u.unit_id.startswith(f"{split}-s000-u") for u in mine)
        assert np.sum([u.quota for u in mine], axis=0).tolist() == wanted[split].tolist()
    assert len({u.unit_id for u in units}) == len({u.seed for u in units}) == len(units)
    assert [job.shards_of(s) for s in ("train", "validation", "test")] == [4, 1, 1]
    assert job.to_json()["split"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    # Two one-split jobs with the same seed must not draw the same samples under two names.
    train, validation = expand(spec(split="train")), expand(spec(split="validation"))
    assert train[0].quota == validation[0].quota and train[0].seed != validation[0].seed
    (tmp_path / "tiny.yaml").write_text(json.dumps(
        {**BASE, "counts": {"3": 5}, "split": {"train": 0.95, "test": 0.05}}))
    with pytest.raises(SpecError, match="split 'test' gets no samples"):
        read_specs(str(tmp_path / "tiny.yaml"))
    # More shards than samples: empty shard files that only look like data.
    (tmp_path / "thin.yaml").write_text(json.dumps(
        {**BASE, "counts": {"3": 20}, "split": {"train": 0.5, "test": 0.5}, "shards": 12}))
    with pytest.raises(SpecError, match=r"thin.yaml: shards 12 would give split 'train' 12 "
                                        r"shards for 10 samples, some of them empty"):
        read_specs(str(tmp_path / "thin.yaml"))


def test_apportion_is_exact_and_proportional():
    assert apportion(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert apportion(1088, [0, 100, 0, 900]).tolist() == [0, 109, 0, 979]
    assert apportion(7, [0, 0, 5]).tolist() == [0, 0, 7]


def _scored(probs, requested, unit):
    return ScoredBatch(unit, np.asarray(requested), np.zeros((len(requested), 28, 28), np.uint8),
                       np.asarray(probs, np.float32))


def test_selection_policies():
    unit = WorkUnit("u", 0, 0, (0, 2, 0), 4, (0,), (0, 2, 0))
    probs = [[0.05, 0.95, 0], [0.5, 0.5, 0], [0.0, 0.99, 0.01], [0, 0.97, 0.03]]
    index, labels, conf, passed, *_ = select_accepted(_scored(probs, [1, 1, 1, 1], unit),
                                                      unit.quota, "conditioned", 0.9)
    assert index.tolist() == [0, 2] and labels.tolist() == [1, 1]  # quota 2, earliest first
    assert passed.tolist() == [0, 3, 0]  # three passed, the quota kept two
    index, labels, *_ = select_accepted(_scored(probs, [1, 1, 1, 1], unit), unit.quota,
                                        "conditioned", 0.0)
    assert index.tolist() == [0, 1]  # filter off: keep in order up to quota
    # The realism test on top: each filter's passes are counted alone, and both must hold.
    scored = _scored(probs, [1, 1, 1, 1], unit)
    scored.realistic = np.array([False, True, True, True])
    index, _, _, passed, confident, realistic, seconded = select_accepted(
        scored, unit.quota, "conditioned", 0.9)
    assert index.tolist() == [2, 3] and passed.tolist() == [0, 2, 0]
    assert confident.tolist() == [0, 3, 0] and realistic.tolist() == [0, 3, 0]
    assert seconded.tolist() == [0, 4, 0]  # no second validator: every candidate passes it
    # A second validator must pick the same label at the same threshold.
    scored = _scored(probs, [1, 1, 1, 1], unit)
    scored.second_probabilities = np.array([[0.02, 0.98, 0], [0, 1, 0], [0.2, 0.8, 0],
                                            [0, 0.95, 0.05]], np.float32)
    index, _, _, passed, confident, _, seconded = select_accepted(scored, unit.quota,
                                                                  "conditioned", 0.9)
    assert index.tolist() == [0, 3] and passed.tolist() == [0, 2, 0]
    assert confident.tolist() == [0, 3, 0] and seconded.tolist() == [0, 3, 0]
    index, *_ = select_accepted(scored, unit.quota, "conditioned", 0.0)
    assert index.tolist() == [0, 1]  # threshold 0: both filters off
    relabel_unit = WorkUnit("u", 0, 0, (1, 1, 0), 4, (0,), (1, 1, 0))
    probs = [[0.96, 0.04, 0], [0.97, 0.03, 0], [0.1, 0.9, 0], [0, 0, 1]]
    index, labels, conf, *_ = select_accepted(_scored(probs, [2, 2, 2, 2], relabel_unit),
                                             relabel_unit.quota, "relabel", 0.9)
    assert index.tolist() == [0, 2] and labels.tolist() == [0, 1]
    assert conf.tolist() == pytest.approx([0.96, 0.9])


def test_confidence_threshold_per_class():
    """``min_confidence: {default: 0.9, I: 0.5}``: the ambiguous class gets its own bar, judged
    by the label a sample would get (requested, or the validator's under relabel)."""
    job = spec(class_set="letters", counts={"I": 4, "L": 4},
               min_confidence={"default": 0.95, "I": 0.5, "L": 0.95, "Q": 0})
    job = job.with_card_defaults({}, "g")
    assert job.min_confidence == 0.95 and job.min_confidence_per_class == {8: 0.5, 16: 0.0}
    assert job.confidence_text() == "0.95 (I: 0.5, Q: 0)"
    assert job.to_json()["min_confidence"] == {"default": 0.95, "I": 0.5, "Q": 0.0}
    only_3 = spec(min_confidence={"3": 0.5})
    only_3 = only_3.with_card_defaults({}, "g")
    assert only_3.thresholds().tolist() == [0.9] * 3 + [0.5] + [0.9] * 6
    thresholds = np.array([0.95, 0.6, 0.0])
    unit = WorkUnit("u", 0, 0, (5, 5, 5), 6, (0,), (5, 5, 5))
    probs = [[0.9, 0.1, 0], [0.3, 0.7, 0], [0.96, 0.04, 0], [0.4, 0.6, 0], [0.9, 0.1, 0],
             [0.1, 0.9, 0]]
    # Left out of the spec, the thresholds are the generator card's, the spec's own on top.
    card = {"sampling": {"latent_scale": 2, "min_confidence": {"default": 0.5, "I": 0.3}}}
    for given, default, per_class in ((None, 0.5, {8: 0.3}), ({"L": 0.7}, 0.5, {8: 0.3, 11: 0.7}),
                                      (0.8, 0.8, {}), ({"default": 0.3}, 0.3, {})):
        job = spec(class_set="letters", counts={"I": 4}, min_confidence=given)
        job = job.with_card_defaults(card, "g")
        assert (job.min_confidence, job.min_confidence_per_class) == (default, per_class), given
        assert job.latent_scale == 2.0
    with pytest.raises(SpecError, match="generator card of g: min_confidence must be a number"):
        spec(counts={"3": 1}).with_card_defaults({"sampling": {"min_confidence": 2}}, "g")
    index, *_ = select_accepted(_scored(probs, [0, 1, 0, 1, 2, 2], unit), unit.quota,
                                     "conditioned", thresholds)
    assert index.tolist() == [1, 2, 3, 4, 5]  # 0 misses 0.95; class 2 is unfiltered
    index, labels, *_ = select_accepted(_scored(probs, [2] * 6, unit), unit.quota, "relabel",
                                          thresholds)
    assert index.tolist() == [1, 2, 3, 5] and labels.tolist() == [1, 0, 1, 1]


def test_top_up_is_bounded_and_sized_by_the_slowest_class():
    job = spec(max_rounds=3, max_oversample=10)
    unit = WorkUnit("u", 0, 0, (0, 100), 120, (1, 0, 0), (0, 100))
    follow = top_up(job, unit, [0, 50], np.array([0, 50]))
    assert follow.round == 1 and follow.quota == (0, 50) and follow.spent == 120
    assert follow.seed != unit.seed and follow.candidates >= 50 / (50 / 120)
    assert top_up(job, unit, [0, 0], np.array([0, 100])) is None
    last = WorkUnit("u", 0, 2, (0, 10), 50, (1, 0, 2), (0, 100), spent=200)
    assert top_up(job, last, [0, 10], np.array([0, 0])) is None  # no rounds left
    broke = WorkUnit("u", 0, 1, (0, 10), 800, (1, 0, 1), (0, 100), spent=200)
    assert top_up(job, broke, [0, 10], np.array([0, 0])) is None  # budget 10 x 100 spent


def test_top_up_aims_candidates_at_each_short_class_by_its_own_acceptance():
    job = spec(max_rounds=3, max_oversample=20)
    unit = WorkUnit("u", 0, 0, (0, 100, 100), 216, (1, 0, 0), (0, 100, 100))
    drawn = np.bincount(candidate_labels(unit), minlength=3)  # 108 of each
    follow = top_up(job, unit, [0, 10, 80], np.array([0, 90, 20]))
    need = np.array([0, 10 / (90 / drawn[1]), 80 / (20 / drawn[2])])  # 12 and 432 candidates
    assert follow.draw_weights == tuple(int(np.ceil(n)) for n in need)
    assert follow.candidates >= need.sum()
    got = np.bincount(candidate_labels(follow), minlength=3)
    assert got[0] == 0 and got[2] >= need[2] and got[1] >= need[1]
    relabel = spec(label_policy="relabel", max_rounds=3, max_oversample=20)
    blind = top_up(relabel, unit, [0, 10, 80], np.array([0, 90, 20]))
    assert blind.draw_weights is None  # under relabel no candidate can be aimed at a class
    assert blind.candidates >= 80 / (20 / 216)


def test_top_up_sizes_come_in_few_shapes():
    # Free-form shortfalls gave every top-up call its own batch shape, and the CPU kernels'
    # per-shape caches grew the peak RSS with the job's length.
    job = spec(max_rounds=3, max_oversample=10)
    unit = WorkUnit("u", 0, 0, (0, 1024), 1114, (1, 0, 0), (0, 1024))
    sizes = {top_up(job, unit, [0, short], np.array([0, 1024 - short])).candidates
             for short in range(1, 400)}
    assert all(n % TOP_UP_QUANTUM == 0 for n in sizes)
    assert len(sizes) <= 16  # 399 different shortfalls, at most 16 shapes
    tight = WorkUnit("u", 0, 1, (0, 10), 100, (1, 0, 1), (0, 100), spent=870)
    assert top_up(job, tight, [0, 10], np.array([0, 50])).candidates == 30  # what the budget leaves


def test_shard_plan_is_balanced_ordered_and_complete():
    from pipeline.sinks import Fragment, plan_shards
    rng = np.random.default_rng(0)
    fragments = [Fragment(f"f{i}", (0, f"{i:07d}", f"u{i}"), int(n))
                 for i, n in enumerate(rng.integers(0, 50, 40))]
    for shards in (1, 3, 7, 64):
        plans = plan_shards(list(reversed(fragments)), shards)
        sizes = [sum(hi - lo for _, lo, hi in plan) for plan in plans]
        assert sum(sizes) == sum(f.rows for f in fragments) and max(sizes) - min(sizes) <= 1
        flat = [(path, lo, hi) for plan in plans for path, lo, hi in plan]
        covered = {}
        for path, lo, hi in flat:  # every row of every fragment exactly once, in order
            assert covered.get(path, 0) == lo
            covered[path] = hi
        assert covered == {f.path: f.rows for f in fragments if f.rows}
        order = list(dict.fromkeys(p for p, _, _ in flat))  # a split fragment shows up twice
        assert order == sorted(order, key=lambda p: int(p[1:]))


def test_the_cards_realism_strength_comes_with_the_cards_threshold_only():
    """The scan chooses threshold, scale and realism strength together: a spec that leaves the
    threshold to the card gets the card's realism filter; one that names a threshold, or says
    realism itself, does not, and takes the scale the scan found best without realism."""
    card = {"sampling": {"latent_scale": 1.5, "min_confidence": 0.99, "realism": 0.8,
                         "scan": [{"latent_scale": 1.25, "min_confidence": 0.9, "cas_mean": 0.98},
                                  {"latent_scale": 2.0, "min_confidence": 0.9, "realism": 0.8,
                                   "cas_mean": 0.99}]}}
    left = spec().with_card_defaults(card, "g")
    assert (left.realism, left.min_confidence, left.latent_scale) == (0.8, 0.99, 1.5)
    assert left.resolved and left.to_json()["realism"] == 0.8
    named = spec(min_confidence=0.9).with_card_defaults(card, "g")
    assert (named.realism, named.latent_scale) == (None, 1.25)
    for said, got in (("off", None), ("on", 1.0), (0.5, 0.5)):
        assert spec(realism=said).with_card_defaults(card, "g").realism == got, said
    assert spec().realism == "default" and not spec().resolved
    assert spec().with_card_defaults({}, "g").realism is None
