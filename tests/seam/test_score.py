import math

import pytest
import torch

from seam_lightning.seam.score import seam_score


def test_hand_computed_values():
    logp = torch.tensor([[-2.0, -6.0], [-1.0, -3.0]])
    lengths = torch.tensor([[2, 3], [1, 3]])
    cand = torch.tensor([[1.5, 3.0], [0.0, 2.0]])
    golden = torch.tensor([1.0, 0.5])
    # prompt 0: exp(-2/2)·max(1.5-1, 0) + exp(-6/3)·max(3-1, 0) = e^-1·0.5 + e^-2·2
    # prompt 1: exp(-1/1)·max(0-0.5, 0) + exp(-3/3)·max(2-0.5, 0) = 0 + e^-1·1.5
    expected = torch.tensor([math.exp(-1) * 0.5 + math.exp(-2) * 2.0, math.exp(-1) * 1.5])
    torch.testing.assert_close(seam_score(logp, lengths, cand, golden), expected)


def test_masked_slots_contribute_nothing_even_when_nan():
    nan = float("nan")
    logp = torch.tensor([[-2.0, nan, -1.0]], requires_grad=True)
    lengths = torch.tensor([[2, 0, 1]])
    cand = torch.tensor([[2.0, nan, float("inf")]])
    golden = torch.tensor([1.0])
    mask = torch.tensor([[True, False, False]])
    # only slot 0 counts: exp(-2/2)·(2-1) = e^-1
    out = seam_score(logp, lengths, cand, golden, mask)
    torch.testing.assert_close(out, torch.tensor([math.exp(-1)]))
    out.sum().backward()
    # d/d logp_0 of exp(logp_0/2)·1 = e^-1/2; masked slots get a clean zero gradient.
    torch.testing.assert_close(logp.grad, torch.tensor([[math.exp(-1) / 2, 0.0, 0.0]]))


def test_all_masked_or_no_candidates_is_zero():
    assert seam_score(torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2)).tolist() == [0.0, 0.0]
    mask = torch.zeros(1, 2, dtype=torch.bool)
    assert seam_score(torch.full((1, 2), float("nan")), torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1), mask).item() == 0.0


def test_zero_when_every_candidate_scores_at_most_golden():
    logp = torch.tensor([[-0.1, -0.2, -0.3]])
    # candidates below or equal to the golden reward: every ε = max(·, 0) = 0
    assert seam_score(logp, torch.ones(1, 3), torch.tensor([[0.0, -5.0, 1.0]]), torch.tensor([1.0])).item() == 0.0


def test_weight_is_exp_mean_logprob_and_at_most_one():
    # ε = 1 for every candidate, so each term is the weight exp(logp/len) itself.
    logp = torch.tensor([[0.0, -4.0, -40.0]])
    lengths = torch.tensor([[5, 4, 10]])
    out = seam_score(logp, lengths, torch.ones(1, 3), torch.zeros(1))
    # 1 + e^-1 + e^-4, and no term can exceed ε (log-probs are <= 0)
    torch.testing.assert_close(out, torch.tensor([1 + math.exp(-1) + math.exp(-4)]))
    single = seam_score(torch.tensor([[0.0]]), torch.tensor([[7]]), torch.tensor([[3.0]]), torch.tensor([1.0]))
    assert single.item() == pytest.approx(2.0)  # weight exactly 1 at log-prob 0 -> ε = 2


def test_larger_discrepancy_gives_larger_value():
    logp, lengths, golden = torch.full((2, 1), -1.0), torch.ones(2, 1), torch.zeros(2)
    out = seam_score(logp, lengths, torch.tensor([[0.5], [2.0]]), golden)
    assert out[1] > out[0] > 0


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(1)), "logprob_sums must be"),
        ((torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2)), "lengths has shape"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3, 2), torch.zeros(2)), "candidate_rewards has shape"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(3)), "golden_rewards must be"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 2, dtype=torch.bool)),
         "mask has shape"),
        ((torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3)), "bool"),
        ((torch.zeros(1, 2), torch.tensor([[1, 0]]), torch.zeros(1, 2), torch.zeros(1)), "length > 0"),
    ],
)
def test_invalid_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        seam_score(*args)
