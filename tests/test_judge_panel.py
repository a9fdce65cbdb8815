"""experiments/judge_panel.py: the panel behind docs/sampling.md's tenth attempt."""
import json

import numpy as np

from experiments.judge_panel import first_per_class, main
from tests.conftest import ROOT


def test_first_per_class_keeps_the_earliest_accepted_of_each_class():
    labels = np.array([0, 1, 0, 0, 1, 0, 1])
    accepted = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    assert first_per_class(accepted, labels, 2).tolist() == [1, 1, 0, 1, 1, 0, 0]


def test_a_cofilter_that_is_the_validator_changes_nothing(tmp_path):
    main(["--out", str(tmp_path), "--cofilters", "self=default:digits",
          "--judges", f"judge=default:digits,validator={ROOT}/kepkreator/assets/digits/validator",
          "--settings", "n2:0.03", "--seeds", "0", "--realism", "0.5"])
    rows = json.loads((tmp_path / "rows.json").read_text())
    alone, paired, realism = rows
    assert (alone["filter"], paired["filter"], realism["filter"]) == \
        ("validator", "self", "realism 0.5")
    assert realism["accepted"] < alone["accepted"]  # half the radius refuses some it accepted
    assert alone["kept"] == paired["kept"] > 0 and alone["judges"] == paired["judges"]
    # the validator agrees with all it kept; the judge is a separate opinion
    assert paired["judges"]["validator"] == 1.0
    assert "| n2:0.03 | self |" in (tmp_path / "summary.md").read_text()
