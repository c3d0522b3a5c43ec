"""What SeamCallback needs from a DataModule: the RL prompts with stable ids, and a way to narrow them.

Any LightningDataModule works with the callback when it implements :class:`SeamRLData`
(two methods), or when it keeps its RL prompts in a :class:`PromptFilter`, the dataset
wrapper shipped here, which implements them::

    class MyData(LightningDataModule):
        def setup(self, stage):
            self.rl = PromptFilter(load_my_prompts(), instruction="question", response="answer")

        def train_dataloader(self):
            return DataLoader(self.rl, batch_size=8, shuffle=True)  # only the prompts SEAM kept

A pruning callback changes the active set at fit start, before Lightning builds the
first train loader, so the first epoch already trains on what SEAM kept; a rescoring
between epochs needs ``Trainer(reload_dataloaders_every_n_epochs=1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import Dataset

from seam_lightning.data.records import Record

TextOf = str | Callable[[Any], str]


@runtime_checkable
class SeamRLData(Protocol):
    """The DataModule side of SeamCallback.

    ``rl_records()`` returns the RL prompts as :class:`Record` s: a stable integer ``id`` (the
    same on every rank and across restarts: checkpoints name prompts by it), ``text`` with
    ``"instruction"`` and ``"response"`` (the golden response r), and ``origin`` (where the
    record came from, for error messages). ``set_active_rl_ids(ids)`` restricts the RL
    training data to those ids (``None``: all of them).

    Optional attributes ``max_instruction_tokens`` and ``max_response_tokens`` (default 128 and
    192), ``prompt_template`` and ``system_prompt`` (default None: the chat template, no system
    turn) say how the module formats its texts, so candidates are scored as training formats
    them (see :func:`seam_lightning.data.formatting.prompt_format`).
    """

    def rl_records(self) -> list[Record]: ...

    def set_active_rl_ids(self, ids: Sequence[int] | set[int] | None) -> None: ...


class PromptFilter(Dataset):
    """A map-style dataset of RL prompts that SeamCallback can score and prune.

    Args:
        dataset: the user's dataset (anything with ``len`` and ``[i]``: a list of dicts, a
            `datasets.Dataset`, a torch Dataset).
        instruction: the item's field holding the prompt, or a function of the item returning it.
        response: the item's field holding the golden response, or a function returning it.
        id: the item's field holding a stable integer id (default: the item's position).

    Iterating yields the items of the active prompts only, unchanged, in their original order.
    """

    def __init__(self, dataset: Sequence[Any], instruction: TextOf = "instruction", response: TextOf = "response",
                 id: str | None = None):
        self.dataset = dataset
        self._instruction = _getter(instruction)
        self._response = _getter(response)
        self._id = id
        self._records: list[Record] | None = None
        self._active: list[int] = list(range(len(dataset)))  # positions in `dataset`

    def rl_records(self) -> list[Record]:
        """Every prompt of the wrapped dataset, active or not, read once."""
        if self._records is None:
            records, seen = [], set()
            for position in range(len(self.dataset)):
                item = self.dataset[position]
                origin = f"{type(self.dataset).__name__} item {position}"
                rid = position if self._id is None else _item_id(item, self._id, origin)
                if rid in seen:
                    raise ValueError(f"{origin}: duplicate id {rid}")
                seen.add(rid)
                text = {"instruction": _text(self._instruction, item, origin, "instruction"),
                        "response": _text(self._response, item, origin, "response")}
                records.append(Record(id=rid, text=text, origin=origin))
            self._records = records
        return self._records

    def set_active_rl_ids(self, ids: Sequence[int] | set[int] | None) -> None:
        """Serve only the items with these ids (None: all)."""
        records = self.rl_records()
        if ids is None:
            self._active = list(range(len(records)))
            return
        wanted = set(ids)
        unknown = wanted - {r.id for r in records}
        if unknown:
            raise ValueError(f"unknown RL example ids: {sorted(unknown)[:10]}")
        self._active = [position for position, r in enumerate(records) if r.id in wanted]

    def __len__(self) -> int:
        return len(self._active)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self._active[index]]


def rl_data_of(datamodule: Any) -> SeamRLData:
    """The object serving SeamCallback's needs: the DataModule itself, or its one PromptFilter."""
    if datamodule is None:
        raise TypeError("SeamCallback needs the Trainer to have a DataModule with RL prompts "
                        "(see seam_lightning.seam.rl_data)")
    if isinstance(datamodule, SeamRLData):
        return datamodule
    filters = [value for value in vars(datamodule).values() if isinstance(value, PromptFilter)]
    if len(filters) == 1:
        return filters[0]
    found = f"it has {len(filters)} PromptFilter attributes" if filters else "it has no PromptFilter attribute"
    raise TypeError(f"SeamCallback cannot read RL prompts from {type(datamodule).__name__}: implement "
                    f"rl_records() and set_active_rl_ids(ids), or keep the prompts in one PromptFilter "
                    f"({found}); see seam_lightning.seam.rl_data")


def _getter(field: TextOf) -> Callable[[Any], Any]:
    if callable(field):
        return field
    return lambda item: item[field] if isinstance(item, Mapping) else getattr(item, field)


def _text(get: Callable[[Any], Any], item: Any, origin: str, name: str) -> str:
    try:
        value = get(item)
    except (KeyError, AttributeError, IndexError) as e:
        raise ValueError(f"{origin}: cannot read the {name} ({type(e).__name__}: {e})") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{origin}: the {name} must be non-empty text, got {type(value).__name__}")
    return value


def _item_id(item: Any, field: str, origin: str) -> int:
    value = item[field] if isinstance(item, Mapping) else getattr(item, field, None)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{origin}: id field {field!r} must be an integer, got {type(value).__name__}")
    return value
