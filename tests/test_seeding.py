import pytest
import torch
from splitmix import MASK, bits, mix64

from seam_lightning.seeding import as_int64, counter_bits, mix64 as mix64_tensor

# Words with the top bit set and clear, small and large: int64 wrap-around and the shifts are exercised.
WORDS = [0, 1, 2**31 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 0x0123456789ABCDEF]


def _unsigned(x: torch.Tensor) -> list[int]:
    return [v & MASK for v in x.tolist()]


def test_as_int64_keeps_the_bits():
    assert [as_int64(w) & MASK for w in WORDS] == WORDS
    assert as_int64(2**63) == -(2**63) and as_int64(2**64 - 1) == -1 and as_int64(5) == 5
    assert as_int64(-1) == -1 and as_int64(2**64 + 3) == 3


def test_tensor_mix64_equals_python_integers():
    x = torch.tensor([as_int64(w) for w in WORDS], dtype=torch.int64)
    assert _unsigned(mix64_tensor(x)) == [mix64(w) for w in WORDS]


def test_counter_bits_equal_the_python_reference():
    seeds = [0, 7, 2**62 + 11, 2**63 - 1]
    for step in (0, 1, 31, 1000):
        got = counter_bits(torch.tensor(seeds, dtype=torch.int64), step, 5)
        assert got.shape == (4, 5)
        assert [_unsigned(row) for row in got] == [[bits(s, step, i) for i in range(5)] for s in seeds]


def test_a_rows_bits_do_not_depend_on_the_other_rows():
    alone = counter_bits(torch.tensor([42]), 3, 8)
    batch = counter_bits(torch.tensor([5, 42, 9, 42]), 3, 8)
    assert torch.equal(batch[1], alone[0]) and torch.equal(batch[3], alone[0])
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize("bit", [0, 31, 32, 52, 63])
def test_counter_bits_are_balanced(bit):
    # Each bit is 1 half the time over many (seed, step, i): a 5-sigma band on 40,000 words.
    words = counter_bits(torch.arange(1000, dtype=torch.int64), 0, 40).flatten()
    ones = ((words >> bit) & 1).sum().item()
    assert abs(ones - 20000) < 5 * 100
