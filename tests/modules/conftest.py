import json

import pytest

from seam_lightning.data import DataSource, RLHFDataModule

# Two kinds of answer the tiny models can learn to tell apart within a few dozen steps.
GOOD = "Serialize obj to a JSON formatted str."
BAD = "the lazy dog jumps over the quick brown fox"


@pytest.fixture
def tiny_data(tmp_path) -> RLHFDataModule:
    """SFT pairs and preference pairs over 8 instructions, with validation splits."""
    instructions = [f"What does `json.dumps` do? ({i})" for i in range(8)]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"instruction": q, "response": GOOD}) + "\n" for q in instructions))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"instruction": q, "chosen": GOOD, "rejected": BAD}) + "\n" for q in instructions))
    return RLHFDataModule(
        sft=DataSource(str(sft)), sft_val=DataSource(str(sft)),
        preference=DataSource(str(prefs)), preference_val=DataSource(str(prefs)),
        rl=None, rl_val=None, batch_size=4,
    )
