import numpy as np
import pytest

from kepkreator.classsets import CLASS_SETS, get_class_set, remap, remap_table
from kepkreator.errors import KepKreatorError


def test_registry_sizes_and_ids():
    sizes = {name: cs.num_classes for name, cs in CLASS_SETS.items()}
    assert sizes == {"digits": 10, "letters": 26, "letters52": 52, "balanced": 47, "byclass": 62}
    letters = get_class_set("letters")
    assert letters.emnist_ids[0] == 1 and letters.emnist_ids[-1] == 26
    assert "".join(get_class_set("balanced").chars[36:]) == "abdefghnqrt"


def test_unknown_class_set_and_class():
    with pytest.raises(KepKreatorError, match="unknown class set 'nope'"):
        get_class_set("nope")
    with pytest.raises(KepKreatorError, match="not in class set 'digits'"):
        get_class_set("digits").index_of("A")


def test_case_merged_lookup():
    letters = get_class_set("letters")
    assert letters.index_of("a") == letters.index_of("A") == 0
    with pytest.raises(KepKreatorError):
        get_class_set("letters52").index_of("?")
    assert get_class_set("letters52").index_of("a") == 26


def test_byclass_to_letters_folds_case_and_drops_digits():
    byclass, letters = get_class_set("byclass"), get_class_set("letters")
    labels = np.array([0, 9, 10, 36, 35, 61])  # '0' '9' 'A' 'a' 'Z' 'z'
    mapped, keep = remap(labels, byclass, letters)
    assert keep.tolist() == [False, False, True, True, True, True]
    assert mapped.tolist() == [0, 0, 25, 25]


def test_merged_class_is_not_split_into_a_case_sensitive_set():
    table = remap_table(get_class_set("balanced"), get_class_set("letters52"))
    balanced = get_class_set("balanced")
    assert table[balanced.index_of("C")] == -1       # holds c and C: ambiguous in letters52
    assert table[balanced.index_of("A")] == 0        # 'A' has its own 'a' class in balanced
    assert table[balanced.index_of("a")] == 26


def test_out_of_range_labels_are_reported():
    with pytest.raises(KepKreatorError, match="label 10 is out of range"):
        get_class_set("digits").check_indices(np.array([1, 10]))
