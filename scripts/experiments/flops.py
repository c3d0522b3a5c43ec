"""How much work a transformer pass is: FLOPs of forward and backward passes, bytes read per decoded token.

Shared by ``bench_ppo.py`` (floors on this machine), ``bench_seam.py`` (the fraction of the matmul
rate SEAM scoring reaches) and ``estimate_paper_scale.py`` (GPU-hours of the paper's experiments). Counting rules:

- a linear layer costs 2 FLOPs per weight per token; the LM head only where its output is used;
- causal attention costs 4 · heads · head_dim · context per token and block;
- a prompt shared by several continuations (SEAM scoring) runs once;
- a backward pass costs 2 per frozen weight per token (gradients of activations) in the blocks
  from the lowest adapted one up, 4 per LoRA weight per token (activations and the weight
  gradient); blocks below the lowest adapter run no backward. This is the "6 × parameters ×
  tokens" rule applied to what is actually trained.

A :class:`Shape` comes from a loaded model (:func:`shape_of`, exact parameter counts) or from a
Llama-style config alone (:func:`shape_from_config`, for models too large to build here).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from seam_lightning.models.forward import unwrap


@dataclass
class Shape:
    """What the floors need to know about one model: weights per block, LoRA, head, attention."""

    frozen_per_block: list[int]  # frozen weights of block i
    lora_per_block: list[int]  # LoRA weights of block i
    head: int  # LM head (V·H) or score head (H) weights
    attention_width: int  # heads · head_dim
    kv_width: int  # key/value heads · head_dim
    weight_bytes: int  # every weight read to decode one token: blocks, LoRA, head

    @property
    def blocks(self) -> int:
        return sum(self.frozen_per_block) + sum(self.lora_per_block)

    @property
    def first_adapted(self) -> int:
        """The lowest block with LoRA weights: the blocks below it are a frozen function of the tokens."""
        adapted = [i for i, n in enumerate(self.lora_per_block) if n]
        return adapted[0] if adapted else len(self.lora_per_block)


def shape_of(model: nn.Module, head_name: str, frozen_bytes: int | None = None) -> Shape:
    """The shape of a loaded model; ``frozen_bytes``: bytes per frozen weight as read while it runs, where that
    differs from how they are stored (2 under bf16 autocast when the frozen weights are held in bf16); None:
    as stored. Trained weights (LoRA, a value head) are always counted as stored: they stay fp32 for the
    optimizer."""
    inner = unwrap(model)
    config = inner.config
    layers = config.num_hidden_layers
    frozen, lora, weight_bytes, head = [0] * layers, [0] * layers, 0, 0
    for name, p in inner.named_parameters():
        if f"{head_name}." in name or "embed_tokens" in name:
            continue  # counted below: the head once (tied or not), the embedding lookup reads B rows only
        parts = name.split(".")
        if "layers" not in parts:
            continue  # final norm: no FLOPs worth counting
        block = int(parts[parts.index("layers") + 1])
        is_lora = "lora_" in name
        (lora if is_lora else frozen)[block] += p.numel()
        weight_bytes += p.numel() * (p.element_size() if is_lora or frozen_bytes is None else frozen_bytes)
    head_weight = getattr(inner, head_name).weight if head_name == "score" else inner.get_output_embeddings().weight
    head = head_weight.numel()
    held = frozen_bytes if frozen_bytes is not None and not head_weight.requires_grad else head_weight.element_size()
    weight_bytes += head * held
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return Shape(frozen, lora, head, config.num_attention_heads * head_dim, kv_heads * head_dim, weight_bytes)


def attention_flops(shape: Shape, lengths: list[int], blocks: int) -> float:
    """Causal attention of full sequences: Σ_i 4 · width · i per sequence and block."""
    return sum(4 * shape.attention_width * n * (n + 1) / 2 for n in lengths) * blocks


def forward_flops(shape: Shape, lengths: list[int], head_positions: int, from_block: int = 0,
                  to_block: int | None = None) -> float:
    """A forward pass through blocks ``from_block`` .. ``to_block`` − 1 (default: to the top) and the head on
    ``head_positions`` positions."""
    tokens = sum(lengths)
    run = range(from_block, len(shape.frozen_per_block) if to_block is None else to_block)
    weights = sum(shape.frozen_per_block[i] + shape.lora_per_block[i] for i in run)
    return 2 * weights * tokens + 2 * shape.head * head_positions + attention_flops(shape, lengths, len(run))


def shared_prompt_flops(shape: Shape, prompt: int, continuations: list[int], head_positions: int,
                        from_block: int = 0, to_block: int | None = None) -> float:
    """A prompt run once and each continuation run after it, reading the prompt's key/value cache
    (how SEAM scoring runs: ``seam_lightning.models.prefix``), with the head on ``head_positions`` positions.

    The weights see prompt + Σ continuations tokens; a continuation's token at position i attends
    to its i predecessors, the prompt's included, as in the full sequence. So it is the prompt's
    forward plus, per continuation, a full forward of prompt∘continuation less the prompt's.
    Blocks as in :func:`forward_flops`.
    """
    def forward(tokens: int) -> float:
        return forward_flops(shape, [tokens], 0, from_block, to_block)

    alone = forward(prompt)
    return alone + sum(forward(prompt + n) - alone for n in continuations) + 2 * shape.head * head_positions


def backward_flops(shape: Shape, lengths: list[int], head_positions: int) -> float:
    """Back-propagation from the head down to the lowest adapted block (none below it)."""
    tokens = sum(lengths)
    run = range(shape.first_adapted, len(shape.frozen_per_block))
    frozen = sum(shape.frozen_per_block[i] for i in run)
    lora = sum(shape.lora_per_block)
    return (2 * frozen * tokens + 4 * lora * tokens + 2 * shape.head * head_positions
            + 2 * attention_flops(shape, lengths, len(run)))


def generation_floor(shape: Shape, prompt_lengths: list[int], steps: int, kv_bytes: int, rate: float,
                     bandwidth: float) -> float:
    """Seconds to sample ``steps`` tokens for a batch at ``rate`` FLOP/s and ``bandwidth`` bytes/s.

    The prompt forward at the matmul rate, then per token the larger of (weights + KV cache
    read) / bandwidth and its FLOPs / matmul rate.
    """
    rows = len(prompt_lengths)
    layers = len(shape.frozen_per_block)
    seconds = forward_flops(shape, prompt_lengths, head_positions=rows) / rate
    for t in range(1, steps):  # the first token comes from the prompt forward
        context = sum(prompt_lengths) + rows * t
        read = shape.weight_bytes + 2 * layers * shape.kv_width * context * kv_bytes
        flops = 2 * (shape.blocks + shape.head) * rows + 4 * shape.attention_width * context * layers
        seconds += max(read / bandwidth, flops / rate)
    return seconds


def shape_from_config(config, lora_rank: int = 16, lora_layers: int | None = None, head: str = "lm_head",
                      weight_bytes: int = 2) -> Shape:
    """The :class:`Shape` of a Llama-style decoder (q, k, v, o and gate, up, down projections per block)
    from its config, with LoRA of rank ``lora_rank`` on every linear of the top ``lora_layers`` blocks
    (default all; 0 for none) and weights stored in ``weight_bytes`` bytes each.

    Biases and norms are left out (under 0.1% of a 7B model's weights). ``head``: ``"lm_head"``
    (vocabulary × hidden) or ``"score"`` (one output, a reward or value head).
    """
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    width, kv_width = config.num_attention_heads * head_dim, kv_heads * head_dim
    linears = [(hidden, width), (hidden, kv_width), (hidden, kv_width), (width, hidden),  # q, k, v, o
               (hidden, inner), (hidden, inner), (inner, hidden)]  # gate, up, down
    frozen = sum(i * o for i, o in linears)
    lora = lora_rank * sum(i + o for i, o in linears)
    layers = config.num_hidden_layers
    adapted = layers if lora_layers is None else min(lora_layers, layers)
    lora_per_block = [0] * (layers - adapted) + [lora] * adapted
    head_weights = hidden * (config.vocab_size if head == "lm_head" else 1)
    total = frozen * layers + sum(lora_per_block) + head_weights
    return Shape([frozen] * layers, lora_per_block, head_weights, width, kv_width, total * weight_bytes)
