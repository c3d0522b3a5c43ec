"""What the ranks of a multi-process run must do together while SEAM scores: gather, agree.

Each rank scores its share of D_rl; these helpers put the shares together and
check that every rank took the same decision from them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch import Trainer


def all_gather_objects(trainer: Trainer, obj: Any, group: Any = None) -> list[Any]:
    """``obj`` of every rank, in rank order (every rank must call this); ``group``: a process group of all ranks."""
    if trainer.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, obj, group=group)
    return gathered


def check_same_on_every_rank(trainer: Trainer, selected: list[int]) -> None:
    """Fail loudly if ranks ever disagree on a selection (they compute it from the same gathered scores)."""
    digest = hashlib.sha256(json.dumps(selected).encode()).hexdigest()
    if len(set(all_gather_objects(trainer, digest))) > 1:
        raise RuntimeError("SeamCallback: DDP ranks selected different RL prompts; refusing to train on diverging data")


class PeerFailure(RuntimeError):
    """Raised on every rank when another rank failed while they worked together; names the rank and its error."""


def raise_together(trainer: Trainer, error: BaseException | None, group: Any = None) -> None:
    """A collective check: if any rank passes an error, every rank raises.

    Each rank calls this at the same points of its work with the exception it caught
    since the last call (or None). A failing rank re-raises its own exception; the others
    raise :class:`PeerFailure` with its message, so no rank is left waiting in a later
    collective for a peer that has stopped (which would hang until the process-group
    timeout). ``group``: a process group of all ranks (e.g. from :func:`waiting_group`).
    """
    report = None if error is None else (trainer.global_rank, f"{type(error).__name__}: {error}")
    failures = [r for r in all_gather_objects(trainer, report, group) if r is not None]
    if error is not None:
        raise error
    if failures:
        rank, message = failures[0]
        raise PeerFailure(f"SEAM scoring stopped: rank {rank} failed with {message}")


def shard(items: list, trainer: Trainer) -> list:
    """This rank's share of ``items``: items rank, rank + world, … (every rank's shares differ in size by <= 1)."""
    return items[trainer.global_rank::trainer.world_size]


def rounds(n_items: int, trainer: Trainer, per_round: int) -> int:
    """How many rounds of ``per_round`` items the largest share needs: every rank runs that many (some empty)."""
    largest_share = -(-n_items // trainer.world_size)
    return -(-largest_share // per_round)


@contextmanager
def waiting_group(trainer: Trainer, timeout: timedelta) -> Iterator[Any]:
    """A process group of all ranks whose collectives wait up to ``timeout`` (None in a single process).

    For one rank working alone while the others wait (building a cache): the default
    group's timeout (30 minutes) fits training steps, not an hour of embedding. Gloo, so
    it works beside NCCL, and it carries only small objects. Every rank must enter it.
    """
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        yield None
        return
    group = torch.distributed.new_group(backend="gloo", timeout=timeout)
    try:
        yield group
    finally:
        torch.distributed.destroy_process_group(group)


def rank_zero_first(trainer: Trainer, action: Callable[[], None], timeout: timedelta) -> None:
    """Run ``action`` on rank 0, then on every other rank; a failure anywhere stops every rank.

    For work whose result rank 0 writes and the others then read (a source's cache): the others
    wait in a group of their own with ``timeout``, since building it may outlast the process
    group's timeout (30 minutes by default).
    """
    with waiting_group(trainer, timeout) as group:
        error = None
        if trainer.is_global_zero:
            try:
                action()
            except Exception as e:  # the waiting ranks stop with it rather than wait for the timeout
                error = e
        raise_together(trainer, error, group)
    error = None
    try:
        action()  # the others load what rank 0 built; rank 0 finds its cache and returns at once
    except Exception as e:
        error = e
    raise_together(trainer, error)
