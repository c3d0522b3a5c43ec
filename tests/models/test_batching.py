import torch
from torch import nn

from seam_lightning.models.batching import eval_mode, token_budget_batches


def test_token_budget_batches():
    # Longest first; rows × first (longest) length within the budget; one row even when it alone exceeds it.
    assert token_budget_batches([3, 10, 5, 5, 2], 12) == [[1], [2, 3], [0, 4]]
    assert token_budget_batches([3, 10], 1) == [[1], [0]]
    assert token_budget_batches([], 8) == []


def test_eval_mode_restores_each_submodules_own_mode():
    model = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2)))
    model.train()
    model[1].eval()  # a frozen part a training module keeps in eval
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        x = torch.ones(3, 2)
        assert torch.equal(model(x), model(x))  # dropout off
    assert model.training and model[0].training
    assert not model[1].training and not model[1][0].training
