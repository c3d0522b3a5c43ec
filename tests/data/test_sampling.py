import json

import pytest
import torch
from torch.utils.data import DistributedSampler

from seam_lightning.data import DataSource, RLHFDataModule
from seam_lightning.data.sampling import EpochShuffleSampler
from seam_lightning.models import load_tokenizer


def _order(sampler, epoch=None):
    if epoch is not None:
        sampler.set_epoch(epoch)
    return list(sampler)


def test_each_pass_is_a_permutation_and_len_is_size():
    sampler = EpochShuffleSampler(50, seed=3)
    assert len(sampler) == 50
    for epoch in range(3):
        assert sorted(_order(sampler, epoch)) == list(range(50))
    assert list(EpochShuffleSampler(0)) == [] and len(EpochShuffleSampler(0)) == 0


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    assert _order(a, 0) == _order(b, 0)
    assert _order(a, 4) == _order(b, 4)
    assert _order(a, 0) == _order(a, 0)  # iterating again gives the same pass
    assert _order(a, 0) != _order(a, 1)
    assert _order(a, 0) != list(range(50))  # it really shuffles
    assert _order(EpochShuffleSampler(50, seed=4), 0) != _order(a, 0)


def test_iteration_does_not_touch_the_global_rng():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    sampler = EpochShuffleSampler(50, seed=0)
    for epoch in range(3):
        _order(sampler, epoch)
    assert torch.equal(torch.get_rng_state(), state)


def test_ranks_split_one_global_order_batch_for_batch():
    single = _order(EpochShuffleSampler(24, seed=2), 1)
    shards = [EpochShuffleSampler(24, seed=2, num_replicas=3, rank=r) for r in range(3)]
    orders = [_order(s, 1) for s in shards]
    assert all(len(s) == 8 for s in shards) and all(len(o) == 8 for o in orders)
    # Batch k of each rank (4 per rank) together is batch k of one process with batch 12.
    for k in range(2):
        union = sorted(i for o in orders for i in o[4 * k:4 * k + 4])
        assert union == sorted(single[12 * k:12 * k + 12])


def test_uneven_sizes_pad_so_every_rank_runs_the_same_number_of_batches():
    shards = [EpochShuffleSampler(5, seed=0, num_replicas=2, rank=r) for r in range(2)]
    orders = [_order(s, 0) for s in shards]
    assert [len(o) for o in orders] == [3, 3] and [len(s) for s in shards] == [3, 3]
    assert set(orders[0]) | set(orders[1]) == set(range(5))
    # Fewer examples than ranks: every rank still gets one (repeated) index.
    tiny = [_order(EpochShuffleSampler(1, seed=0, num_replicas=3, rank=r), 0) for r in range(3)]
    assert tiny == [[0], [0], [0]]


def test_skip_on_a_rank_drops_that_ranks_consumed_indices():
    sampler = EpochShuffleSampler(20, seed=5, num_replicas=2, rank=1)
    full = _order(sampler, 0)
    sampler.skip(4)
    assert _order(sampler) == full[4:]


def test_bad_rank_is_rejected():
    with pytest.raises(ValueError, match="rank"):
        EpochShuffleSampler(10, num_replicas=2, rank=2)


def test_skip_drops_the_start_of_the_next_pass_only():
    sampler = EpochShuffleSampler(20, seed=5)
    full = _order(sampler, 2)
    sampler.skip(7)
    assert len(sampler) == 20
    assert _order(sampler) == full[7:]
    assert _order(sampler) == full  # the pass after is complete again
    sampler.skip(7)
    sampler.set_epoch(3)  # the skip applies to whichever pass comes next
    assert _order(sampler) == _order(EpochShuffleSampler(20, seed=5), 3)[7:]
    sampler.skip(-3)
    assert _order(sampler) == _order(EpochShuffleSampler(20, seed=5), 3)
    sampler.skip(25)
    assert _order(sampler) == []


@pytest.mark.parametrize("size, num_replicas", [(24, 1), (24, 3), (5, 2), (1, 3), (0, 2)])
def test_same_indices_as_a_plain_distributed_sampler(size, num_replicas):
    for rank in range(num_replicas):
        ours = EpochShuffleSampler(size, seed=7, num_replicas=num_replicas, rank=rank)
        plain = DistributedSampler(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=7)
        assert len(ours) == len(plain)
        for epoch in (0, 3):
            plain.set_epoch(epoch)
            assert _order(ours, epoch) == list(plain)


def test_resuming_gives_the_tail_of_the_plain_distributed_order():
    plain = DistributedSampler(range(23), num_replicas=2, rank=1, shuffle=True, seed=4)
    plain.set_epoch(2)
    sampler = EpochShuffleSampler(23, seed=4, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    sampler.skip(5)  # five indices of this rank's pass consumed before the restart
    assert list(sampler) == list(plain)[5:]
    assert len(sampler) == len(plain) == 12


def _datamodule(tmp_path, seed):
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Explain `g{i}`.", "response": f"Join {i}."}) + "\n"
                            for i in range(16)))
    return RLHFDataModule(sft=None, sft_val=None, rl=DataSource(str(path)), rl_val=None, batch_size=4, seed=seed)


def _loader_order(tokenizer, tmp_path, seed, epoch=0):
    dm = _datamodule(tmp_path, seed)
    dm.connect(tokenizer, "rl")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, EpochShuffleSampler)
    loader.sampler.set_epoch(epoch)
    return [i for batch in loader for i in batch["ids"].tolist()]


def test_datamodule_train_order_depends_only_on_seed_and_epoch(tmp_path, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    first = _loader_order(tokenizer, tmp_path, seed=1)
    torch.manual_seed(99)  # the global RNG does not matter, and is not drawn from
    state = torch.get_rng_state()
    second = _loader_order(tokenizer, tmp_path, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == second
    assert sorted(first) == list(range(16))
    assert _loader_order(tokenizer, tmp_path, seed=2) != first
    assert _loader_order(tokenizer, tmp_path, seed=1, epoch=1) != first
