"""SeamCallback with a user's own LightningDataModule: the two-method protocol, or a PromptFilter."""

import pytest
import torch
from doubles import ListSource
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader

from seam_lightning import SeamCallback
from seam_lightning.data.records import Record
from seam_lightning.models.loading import load_tokenizer
from seam_lightning.seam.rl_data import PromptFilter, rl_data_of

ROWS = [{"question": f"Explain `mod.f{i}`.", "answer": f"Return the value {i}.", "uid": 50 + i} for i in range(10)]
CANDIDATES = {r["question"]: [f"Split {i} paths.", "Join two paths.", f"The lazy dog {i}."] for i, r in enumerate(ROWS)}


class FilteredData(LightningDataModule):
    """A user's DataModule that keeps its prompts in a PromptFilter (its loader yields the raw dicts)."""

    def setup(self, stage):
        self.prompts = PromptFilter(ROWS, instruction="question", response="answer", id="uid")

    def train_dataloader(self):
        return DataLoader(self.prompts, batch_size=4, collate_fn=lambda items: [item["uid"] for item in items])


class ProtocolData(LightningDataModule):
    """A user's DataModule implementing the protocol itself (its own ids and filtering)."""

    max_instruction_tokens = 64
    max_response_tokens = 32

    def __init__(self):
        super().__init__()
        self.active = None

    def rl_records(self):
        return [Record(id=r["uid"], text={"instruction": r["question"], "response": r["answer"]}, origin=f"row {i}")
                for i, r in enumerate(ROWS)]

    def set_active_rl_ids(self, ids):
        self.active = None if ids is None else set(ids)

    def train_dataloader(self):
        rows = [r for r in ROWS if self.active is None or r["uid"] in self.active]
        return DataLoader(rows, batch_size=4, collate_fn=lambda items: [item["uid"] for item in items])


class SeesIds(LightningModule):
    """Trains on batches of ids and records them; exposes the tokenizer the callback scores with."""

    def __init__(self, model_dir):
        super().__init__()
        self.tokenizer = load_tokenizer(model_dir)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen.extend(batch)
        return (self.weight ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("datamodule_class", [FilteredData, ProtocolData])
def test_callback_prunes_a_user_datamodule(tiny_model_dir, tmp_path, datamodule_class):
    torch.manual_seed(0)
    callback = SeamCallback(ListSource(CANDIDATES), fraction=0.3, num_candidates=2,
                            reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    module, data = SeesIds(str(tiny_model_dir)), datamodule_class()
    Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path
            ).fit(module, datamodule=data)

    # Every prompt scored under the user's own ids; the 3 largest SEAM (ties by id) are pruned.
    assert sorted(callback.scores) == [r["uid"] for r in ROWS]
    expected = sorted(callback.scores, key=lambda i: (-callback.scores[i], i))[:3]
    assert callback.pruned_ids == expected
    assert sorted(module.seen) == sorted(set(callback.scores) - set(expected))  # the first epoch already


def test_prompt_filter_serves_the_active_items_in_order():
    prompts = PromptFilter(ROWS, instruction=lambda item: item["question"], response="answer", id="uid")
    assert [r.id for r in prompts.rl_records()] == list(range(50, 60))
    prompts.set_active_rl_ids([57, 51, 53])
    assert [prompts[i]["uid"] for i in range(len(prompts))] == [51, 53, 57]
    prompts.set_active_rl_ids(None)
    assert len(prompts) == 10
    with pytest.raises(ValueError, match="unknown RL example ids: \\[99\\]"):
        prompts.set_active_rl_ids([99])


def test_prompt_filter_names_the_item_and_field_it_cannot_read():
    rows = [*ROWS[:3], {"question": "Explain `x`.", "uid": 7}]
    with pytest.raises(ValueError, match="list item 3: cannot read the response \\(KeyError"):
        PromptFilter(rows, instruction="question", response="answer", id="uid").rl_records()


def test_a_datamodule_without_the_protocol_is_refused_with_what_it_needs():
    class Plain(LightningDataModule):
        pass

    with pytest.raises(TypeError, match="implement rl_records\\(\\) and set_active_rl_ids\\(ids\\), or keep the "
                                        "prompts in one PromptFilter \\(it has no PromptFilter attribute\\)"):
        rl_data_of(Plain())


def test_callback_scores_with_the_datamodules_prompt_format(tiny_model_dir, tmp_path):
    from seam_lightning.data.formatting import STACK_LLAMA_TEMPLATE
    from seam_lightning.models.loading import load_policy, load_reward_model
    from seam_lightning.seam.scorer import SeamExample, SeamScorer

    class StackLlamaData(ProtocolData):
        prompt_template = STACK_LLAMA_TEMPLATE
        system_prompt = "Be brief."

    torch.manual_seed(0)
    callback = SeamCallback(ListSource(CANDIDATES), fraction=0.3, num_candidates=2,
                            reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir), progress=False)
    Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path
            ).fit(SeesIds(str(tiny_model_dir)), datamodule=StackLlamaData())

    torch.manual_seed(0)  # the same random reward head as the callback's
    policy, reward_model = load_policy(str(tiny_model_dir)), load_reward_model(str(tiny_model_dir))
    examples = [SeamExample(r["uid"], r["question"], r["answer"], CANDIDATES[r["question"]][:2]) for r in ROWS]
    tokenizer = load_tokenizer(str(tiny_model_dir))

    def scores(**style):
        scorer = SeamScorer(policy, reward_model, tokenizer, max_instruction_tokens=64, max_response_tokens=32,
                            progress=False, **style)
        return {r.id: r.seam for r in scorer.score(examples)}

    assert callback.scores == pytest.approx(scores(template=STACK_LLAMA_TEMPLATE, system_prompt="Be brief."), abs=1e-6)
    assert callback.scores != pytest.approx(scores(), abs=1e-6)  # the format matters: it was not ignored
