import pytest
import torch

from seam_lightning.rl.normalization import RunningMoments


def test_one_batch():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert rm.count == 4
    assert rm.mean == pytest.approx(2.5)
    assert rm.var == pytest.approx(1.25)
    assert rm.std == pytest.approx(1.25**0.5)


def test_two_batches_match_one_batch():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0]))
    rm.update(torch.tensor([3.0, 4.0]))
    assert rm.count == 4
    assert rm.mean == pytest.approx(2.5)
    assert rm.var == pytest.approx(1.25)


def test_uneven_split_and_2d_input_match_one_batch():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0]))
    rm.update(torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    # [1..5]: mean 3, population var (4+1+0+1+4)/5 = 2
    assert rm.count == 5
    assert rm.mean == pytest.approx(3.0)
    assert rm.var == pytest.approx(2.0)


def test_fresh_state():
    rm = RunningMoments()
    assert (rm.mean, rm.var, rm.count) == (0.0, 1.0, 0)


def test_state_dict_round_trip():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 2.0]))
    fresh = RunningMoments()
    fresh.load_state_dict(rm.state_dict())
    assert fresh.state_dict() == {"mean": 1.5, "var": 0.25, "count": 2}
    fresh.update(torch.tensor([3.0, 4.0]))
    assert fresh.count == 4
    assert fresh.mean == pytest.approx(2.5)
    assert fresh.var == pytest.approx(1.25)


def test_empty_update_is_noop():
    rm = RunningMoments()
    rm.update(torch.tensor([]))
    assert (rm.mean, rm.var, rm.count) == (0.0, 1.0, 0)
    rm.update(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    before = rm.state_dict()
    rm.update(torch.empty(0, 3))
    assert rm.state_dict() == before
