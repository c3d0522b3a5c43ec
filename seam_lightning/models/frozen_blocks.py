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

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn

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

    @contextmanager
    def replay(self, hidden: Tensor) -> Iterator[None]:
        """Forwards inside the block skip blocks ``0 .. index − 1`` and give block ``index`` ``hidden`` instead.

        ``hidden`` must be what :meth:`capture` recorded for the same rows and columns.
        """
        def pass_on(hidden_states, *args, **kwargs):
            return (hidden_states,) if self.returns_tuple else hidden_states

        def last(hidden_states, *args, **kwargs):
            if hidden_states.shape[:2] != hidden.shape[:2]:
                raise ValueError(f"replayed hidden states {tuple(hidden.shape)} do not match the input "
                                 f"{tuple(hidden_states.shape)}")
            # Reentrant checkpointing needs a block's input to require grad (peft makes the
            # embeddings' output do so): the replayed tensor stands in for it, so it does too.
            out = hidden.detach().requires_grad_() if hidden_states.requires_grad else hidden
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


@torch.no_grad()
def frozen_blocks(model: nn.Module, n_tokens: int = 6) -> FrozenBlocks | None:
    """The model's frozen bottom blocks, or None when there are none or replaying them is not exact.

    Runs a short input through the model three ways — in full, capturing, replaying —
    and accepts replay only when the last hidden states agree bitwise, so a family whose
    body does more between blocks than calling them is never replayed wrongly.
    """
    index = first_trained_block(model)
    blocks = decoder_blocks(model)
    if index == 0 or blocks is None:
        return None
    parameter = next(unwrap(model).parameters())
    if parameter.device.type == "meta":
        return None
    vocab = unwrap(model).get_input_embeddings().weight.shape[0]
    ids = torch.arange(1, 2 * n_tokens + 1, device=parameter.device).remainder(vocab).view(2, n_tokens)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # one left-padded row
    outputs: list[object] = []
    handle = blocks[index - 1].register_forward_hook(lambda module, args, output: outputs.append(output))
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        expected = hidden_states(model, ids, mask)
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    frozen = FrozenBlocks(model, index, returns_tuple=isinstance(outputs[0], tuple))
    model.eval()
    try:
        with frozen.capture() as captured:
            hidden_states(model, ids, mask)
        with frozen.replay(captured[0]):
            replayed = hidden_states(model, ids, mask)
    finally:
        for module, training in modes:
            module.training = training
    return frozen if torch.equal(replayed, expected) else None


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
