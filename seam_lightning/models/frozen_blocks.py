"""Computing the frozen bottom of a LoRA model once per batch and replaying it.

With LoRA on the top blocks only (``LoRASettings.layers``), every block below the lowest
adapted one is a fixed function of the tokens: the policy and π_ref (the policy with its
adapters off) compute the same hidden states there, so do the value model and the reward
model sharing its backbone, and so does every update pass over the same rollout. PPO
therefore runs those blocks once per rollout: the first forward records the input of
the lowest adapted block (:meth:`FrozenBlocks.capture`) and later forwards of the same
sequences skip the blocks below it and start from that tensor (:meth:`FrozenBlocks.replay`).

Replay goes through the model's own forward (the embedding lookup, masks and position
embeddings are recomputed: they cost nothing next to a block); only the skipped blocks'
``forward`` is swapped for one that passes its input on, and the last of them returns
the recorded tensor. The block above therefore receives the recorded tensor as its real
argument — what gradient checkpointing saves and recomputes from. Results equal a full
forward bitwise: the same operations run on the same inputs. :func:`frozen_blocks`
checks that on a short input before any replay is trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.tensor import DTensor

from seam_lightning.models.forward import hidden_states, transformer_body, unwrap


def decoder_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of transformer blocks (``layers``, ``h``, …): the body's ModuleList of num_hidden_layers."""
    body = transformer_body(model)
    n = getattr(unwrap(model).config, "num_hidden_layers", None)
    for child in body.children():
        if isinstance(child, nn.ModuleList) and len(child) == n:
            return child
    return None


def first_trained_block(model: nn.Module) -> int:
    """Index of the lowest block with a trainable or LoRA parameter; 0 when anything below the blocks trains.

    Blocks below it hold neither, so they compute the same with adapters on or off and
    never receive gradients. Anything trainable in the body outside the blocks
    (embeddings, a norm) makes the answer 0: nothing is then reused.
    """
    blocks = decoder_blocks(model)
    if blocks is None:
        return 0
    in_blocks = {id(p) for p in blocks.parameters()}
    if any(p.requires_grad for p in transformer_body(model).parameters() if id(p) not in in_blocks):
        return 0
    for index, block in enumerate(blocks):
        if any(p.requires_grad or "lora_" in name for name, p in block.named_parameters()):
            return index
    return len(blocks)


class _BottomReached(Exception):
    """Raised by block ``index``'s pre-hook to end a forward that only wanted the blocks below it."""

    def __init__(self, hidden: Tensor):
        super().__init__()
        self.hidden = hidden


class FrozenBlocks:
    """Blocks ``0 .. index − 1`` of a model, whose output (block ``index``'s input) depends on the tokens alone."""

    def __init__(self, model: nn.Module, index: int, returns_tuple: bool):
        self.blocks = decoder_blocks(model)
        self.index = index
        self.returns_tuple = returns_tuple  # older blocks (GPT-2, GPT-NeoX, Gemma-2) return (hidden, …)

    @contextmanager
    def capture(self) -> Iterator[list[Tensor]]:
        """Forwards inside the block append block ``index``'s input hidden states [B, T, H] to the yielded list."""
        captured: list[Tensor] = []

        def record(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured.append(hidden.detach())

        handle = self.blocks[self.index].register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    def below(self, forward: Callable[[], object]) -> Tensor:
        """Run ``forward`` (a forward pass of the model) through blocks ``0 .. index − 1`` only and return their
        output, block ``index``'s input: the work of the blocks above is not done."""
        def stop(module, args, kwargs):
            raise _BottomReached(args[0] if args else kwargs["hidden_states"])

        handle = self.blocks[self.index].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            forward()
        except _BottomReached as reached:
            return reached.hidden
        finally:
            handle.remove()
        raise RuntimeError(f"the forward pass never reached block {self.index}")

    @contextmanager
    def replay(self, hidden: Tensor, leading_columns: bool = False) -> Iterator[None]:
        """Forwards inside the block skip blocks ``0 .. index − 1`` and give block ``index`` ``hidden`` instead.

        ``hidden`` must be what :meth:`capture` recorded for the same rows and columns; with
        ``leading_columns``, for the same rows and at least the columns a forward runs, which
        then reads the first of them (a causal model's state of a column does not depend on
        the columns after it).
        """
        def pass_on(hidden_states, *args, **kwargs):
            return (hidden_states,) if self.returns_tuple else hidden_states

        def last(hidden_states, *args, **kwargs):
            rows, columns = hidden_states.shape[:2]
            fits = hidden.shape[0] == rows and (hidden.shape[1] >= columns if leading_columns
                                                else hidden.shape[1] == columns)
            if not fits:
                raise ValueError(f"replayed hidden states {tuple(hidden.shape)} do not match the input "
                                 f"{tuple(hidden_states.shape)}")
            recorded = hidden[:, :columns]
            # Reentrant checkpointing needs a block's input to require grad (peft makes the
            # embeddings' output do so): the replayed tensor stands in for it, so it does too.
            out = recorded.detach().requires_grad_() if hidden_states.requires_grad else recorded
            return (out,) if self.returns_tuple else out

        skipped = list(self.blocks)[: self.index]
        own = [block.__dict__.get("forward") for block in skipped]  # e.g. accelerate's offloading wrapper
        for block in skipped[:-1]:
            block.forward = pass_on
        skipped[-1].forward = last
        try:
            yield
        finally:
            for block, forward in zip(skipped, own):
                if forward is None:
                    del block.forward  # the class's forward again
                else:
                    block.forward = forward


def _probe_input(model: nn.Module, n_tokens: int) -> tuple[Tensor, Tensor]:
    """A short batch the checks run: two rows of ``n_tokens`` ids, one left-padded."""
    vocab = unwrap(model).get_input_embeddings().weight.shape[0]
    device = next(unwrap(model).parameters()).device
    ids = torch.arange(1, 2 * n_tokens + 1, device=device).remainder(vocab).view(2, n_tokens)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    return ids, mask


@contextmanager
def _in_eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _blocks_at(model: nn.Module, index: int, ids: Tensor, mask: Tensor) -> tuple[FrozenBlocks, Tensor, Tensor]:
    """FrozenBlocks of ``model`` at ``index``, block ``index``'s input and the last hidden states, from one
    full forward of ``ids`` (which also shows whether the blocks return tuples)."""
    outputs: list[object] = []
    blocks = decoder_blocks(model)
    handle = blocks[index - 1].register_forward_hook(lambda module, args, output: outputs.append(output))
    frozen = FrozenBlocks(model, index, returns_tuple=False)
    try:
        with frozen.capture() as captured:
            expected = hidden_states(model, ids, mask)
    finally:
        handle.remove()
    frozen.returns_tuple = isinstance(outputs[0], tuple)
    return frozen, captured[0], expected


def _replays_exactly(frozen: FrozenBlocks, model: nn.Module, hidden: Tensor, ids: Tensor, mask: Tensor,
                     expected: Tensor) -> bool:
    with frozen.replay(hidden):
        return torch.equal(hidden_states(model, ids, mask), expected)


@torch.no_grad()
def frozen_blocks(model: nn.Module, n_tokens: int = 6) -> FrozenBlocks | None:
    """The model's frozen bottom blocks, or None when there are none or replaying them is not exact.

    Runs a short input through the model three ways — in full, capturing, replaying —
    and accepts replay only when the last hidden states agree bitwise, so a family whose
    body does more between blocks than calling them is never replayed wrongly.
    """
    index = first_trained_block(model)
    if index == 0 or decoder_blocks(model) is None or next(unwrap(model).parameters()).device.type == "meta":
        return None
    ids, mask = _probe_input(model, n_tokens)
    with _in_eval_mode(model):
        frozen, below, expected = _blocks_at(model, index, ids, mask)
        return frozen if _replays_exactly(frozen, model, below, ids, mask, expected) else None


def _same_tensors(a: list[tuple[str, Tensor]], b: list[tuple[str, Tensor]]) -> bool:
    if [name for name, _ in a] != [name for name, _ in b]:
        return False
    for (_, x), (_, y) in zip(a, b):
        same_storage = x.data_ptr() == y.data_ptr() and x.stride() == y.stride()
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device or not (same_storage or torch.equal(x, y)):
            return False
    return True


def _tensors(module: nn.Module, skip: frozenset[int] | set[int] = frozenset()) -> list[tuple[str, Tensor]]:
    """Parameters and buffers of ``module`` (all but ``skip``), by name: LoRA's show as lora_A/lora_B."""
    return [(name, t) for name, t in (*module.named_parameters(), *module.named_buffers()) if id(t) not in skip]


def _holds_whole_weights(model: nn.Module) -> bool:
    """False under FSDP (each rank holds shards of the weights, not comparable) and on the meta device."""
    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        return False
    return all(not isinstance(p, DTensor) and p.device.type != "meta" for p in model.parameters())


@torch.no_grad()
def shared_frozen_blocks(a: nn.Module, b: nn.Module, n_tokens: int = 6) -> tuple[FrozenBlocks, FrozenBlocks] | None:
    """The bottom blocks two models compute identically, as FrozenBlocks of each, or None when there are none.

    A policy and a reward model fine-tuned from one base with LoRA on their top blocks
    (or merged exports of such) share the blocks below the lowest adapted one: the same
    weights, the same embedding. Those blocks can run once for both when neither trains
    (SEAM scores the same sequences with both models, in inference mode). Accepted only
    when the bodies outside the blocks (embeddings, rotary tables, final norm) and each
    shared block hold equal tensors under equal names (a LoRA block has more), and
    a short input through ``a``'s bottom replayed into ``b`` gives ``b``'s own forward bit
    for bit (the same attention kernel, the same dtype, no family quirk in between).
    """
    blocks_a, blocks_b = decoder_blocks(a), decoder_blocks(b)
    if blocks_a is None or blocks_b is None or unwrap(a).config.model_type != unwrap(b).config.model_type:
        return None
    if not (_holds_whole_weights(a) and _holds_whole_weights(b)):
        return None
    outside = [_tensors(transformer_body(m), {id(t) for t in (*blocks.parameters(), *blocks.buffers())})
               for m, blocks in ((a, blocks_a), (b, blocks_b))]
    if not _same_tensors(*outside):
        return None
    index = 0
    # The top block always runs in each model: the replayed tensor is handed to it.
    for block_a, block_b in zip(blocks_a[:-1], blocks_b[:-1]):
        if not _same_tensors(_tensors(block_a), _tensors(block_b)):
            break
        index += 1
    if index == 0:
        return None
    ids, mask = _probe_input(a, n_tokens)
    with _in_eval_mode(a), _in_eval_mode(b):
        frozen_a, below, expected_a = _blocks_at(a, index, ids, mask)
        frozen_b, _, expected_b = _blocks_at(b, index, ids, mask)
        exact = (_replays_exactly(frozen_a, a, below, ids, mask, expected_a)
                 and _replays_exactly(frozen_b, b, below, ids, mask, expected_b))
    return (frozen_a, frozen_b) if exact else None


@contextmanager
def capturing(frozen: FrozenBlocks | None) -> Iterator[list[Tensor]]:
    """Record the frozen blocks' output of the forwards inside the block (nothing without frozen blocks)."""
    if frozen is None:
        yield []
        return
    with frozen.capture() as captured:
        yield captured


def replaying(frozen: FrozenBlocks | None, prefix: Tensor | None,
              rows: Tensor | None = None) -> AbstractContextManager:
    """Start the forwards inside the block from ``prefix`` (its ``rows``) instead of running the frozen blocks."""
    if frozen is None or prefix is None:
        return nullcontext()
    return frozen.replay(prefix if rows is None else prefix[rows])
