import torch

from seam_lightning.data.collate import IGNORE_INDEX, collate_preference, collate_rl, collate_sft, pad


def test_pad_sides():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_sft_labels_cover_response_tokens_only():
    examples = [
        {"id": 7, "prompt_ids": [10, 11, 12], "response_ids": [20, 21, 2]},
        {"id": 9, "prompt_ids": [10], "response_ids": [22, 2]},
    ]
    batch = collate_sft(examples, pad_id=2)
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * 3 + [20, 21, 2],
        [IGNORE_INDEX, 22, 2] + [IGNORE_INDEX] * 3,
    ]
    # The pad id equals EOS here: the real EOS stays a target, the padding does not.
    assert batch["ids"].tolist() == [7, 9]


def test_preference_batch_stacks_chosen_then_rejected():
    examples = [{"id": 1, "prompt_ids": [5], "chosen_ids": [6, 2], "rejected_ids": [7, 8, 2]}]
    batch = collate_preference(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 2, 0], [5, 7, 8, 2]]
    assert batch["attention_mask"].sum(-1).tolist() == [3, 4]


def test_rl_prompts_are_left_padded_with_texts():
    examples = [
        {"id": 3, "prompt_ids": [5, 6], "instruction": "a", "response": "b"},
        {"id": 4, "prompt_ids": [5], "instruction": "c", "response": "d"},
    ]
    batch = collate_rl(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6], [0, 5]]
    assert torch.equal(batch["ids"], torch.tensor([3, 4]))
    assert batch["instruction"] == ["a", "c"] and batch["response"] == ["b", "d"]
