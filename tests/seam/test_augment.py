"""contrast_augmentations: (I*, r*) for the SFT set, (I, r ≻ r*) for the preference set."""

import pytest

from seam_lightning.data.records import Record
from seam_lightning.seam.augment import contrast_augmentations
from seam_lightning.seam.sources.contrast import Match


class TableContrast:
    """Neighbours from a fixed table, exposed like ContrastSource (candidates + last_matches)."""

    def __init__(self, table):
        self.table = table
        self.last_matches = []

    def candidates(self, instructions, responses, num_candidates):
        self.last_matches = [[Match(0, i, r, 0.85) for i, r in self.table[q][:num_candidates]] for q in instructions]
        return [[m.response for m in ms] for ms in self.last_matches]


def _record(i, instruction, response):
    return Record(i, {"instruction": instruction, "response": response}, f"test #{i}")


def test_pairs_per_prompt_golden_preferred_and_sft_pairs_added_once():
    table = {"Q1": [("N1", "A1"), ("N2", "A2"), ("N3", "A3")], "Q2": [("N2", "A2")]}
    out = contrast_augmentations(TableContrast(table), [_record(4, "Q1", "G1"), _record(9, "Q2", "G2")], per_prompt=2)
    assert out.sft == [{"instruction": "N1", "response": "A1"}, {"instruction": "N2", "response": "A2"}]
    assert out.preference == [
        {"instruction": "Q1", "chosen": "G1", "rejected": "A1"},
        {"instruction": "Q1", "chosen": "G1", "rejected": "A2"},
        {"instruction": "Q2", "chosen": "G2", "rejected": "A2"},
    ]
    assert out.sources == [4, 4, 9]


def test_examples_added_earlier_are_not_added_again():
    table = {"Q1": [("N1", "A1"), ("N2", "A2")]}
    out = contrast_augmentations(TableContrast(table), [_record(0, "Q1", "G1")], per_prompt=5,
                                 existing_sft={("N1", "A1")}, existing_preference={("Q1", "G1", "A2")})
    assert out.sft == [{"instruction": "N2", "response": "A2"}]
    assert out.preference == [{"instruction": "Q1", "chosen": "G1", "rejected": "A1"}]


def test_nothing_selected_gives_nothing_and_a_bad_count_is_rejected():
    assert contrast_augmentations(TableContrast({}), [], per_prompt=5).sft == []
    with pytest.raises(ValueError, match="per prompt"):
        contrast_augmentations(TableContrast({}), [], per_prompt=0)
