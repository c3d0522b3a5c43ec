"""Record formats other than the canonical columns: TRL's standard and conversational formats, HH-RLHF text.

The canonical fields are ``instruction`` and ``response`` (SFT, RL) or ``instruction``,
``chosen`` and ``rejected`` (preference pairs). :func:`convert` derives them from a
record in another common format, chosen by the fields the record has (first match):

* ``messages`` — TRL conversational language modelling: a list of ``{"role", "content"}``
  messages. The last message must be the assistant's: it is the ``response``; the
  messages before it are the prompt (``instruction``).
* ``prompt`` — TRL prompt-only, prompt-completion and (explicit-prompt) preference:
  ``prompt`` → ``instruction``, ``completion`` → ``response``, ``chosen``/``rejected`` as
  named. Standard records hold strings, taken as they are; conversational records hold
  message lists: ``prompt`` is rendered as below, and ``completion``, ``chosen`` and
  ``rejected`` must each be a list of exactly one assistant message (the response).
  Records with a boolean ``label`` (TRL unpaired preference) are refused: half of their
  completions are examples of what not to say.
* ``chosen`` and ``rejected`` without a prompt — implicit-prompt preference, either as
  message lists (TRL conversational) or as HH-RLHF text (Anthropic/hh-rlhf:
  ``"\\n\\nHuman: question\\n\\nAssistant: answer"``, possibly over several turns). Each
  side's last turn must be the assistant's: it is ``chosen``/``rejected``. The turns
  before it are the prompt, which both sides must share (their common prefix): a pair
  that differs anywhere but in its last turn is an error, as there is no one prompt.
  Plain strings that are not HH-RLHF text are not split: TRL cuts them at the first
  differing character, which is rarely where the prompt ends.

A record that has a field named ``instruction`` is canonical and never converted.

**Prompt rendering.** The records carry no tokenizer, so a conversational prompt becomes
one plain text, and the tokenizer's chat template later wraps it as a single user turn:

* Roles are ``system``, ``user`` and ``assistant``; a system message may only come first.
  A blank system message is ignored; other messages must have non-blank content.
  The prompt must end with a user message (the one the response answers).
* One user message: the instruction is its content, unchanged.
* Several messages (multi-turn): a transcript in the HH-RLHF form, cued for the next
  answer: ``"Human: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant:"``.
* A system message's content (stripped) comes first, followed by a blank line (``"\\n\\n"``).

HH-RLHF text is split into turns at ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"``, each
turn's text stripped of the surrounding spaces the markup puts there, and rendered by
the same rules, so an HH-RLHF pair and the same conversation as messages give the same
record: a single-turn prompt is just the human's text.

Problems raise :class:`FormatError`, whose message names the field and, within it, the
message or turn; the caller adds the file and the record.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

ROLES = ("system", "user", "assistant")
SPEAKERS = {"user": "Human", "assistant": "Assistant"}
"""How the transcript of a multi-turn prompt (and HH-RLHF text) names each role."""
_HH_MARKER = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class FormatError(ValueError):
    """A record in a recognised format is malformed; the message names the field (not the file or record)."""


@dataclass(frozen=True)
class Text:
    """A canonical field's value and the field it came from (for error messages)."""

    value: Any  # validated by the caller, like any column
    field: str


@dataclass(frozen=True)
class Turn:
    """One message of a conversation; ``where`` names it in errors and takes no part in comparisons."""

    role: str
    content: str
    where: str = field(compare=False)


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a text field, as the end of a sentence ("is empty"); None if it can."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value.strip():
        return "is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone \ud800 escape in JSON; tokenizers reject it
        return f"holds an unpaired surrogate {value[e.start]!r} at character {e.start}"
    return None


# -- conversations ------------------------------------------------------------------------------

def messages_to_turns(value: Any, name: str) -> list[Turn]:
    """Validate the message list in field ``name`` and return its turns."""
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise FormatError(f"field {name!r} must be a non-empty list of messages, got {got}")
    turns = []
    for i, message in enumerate(value):
        where = f"field {name!r} message {i}"
        if not isinstance(message, Mapping):
            raise FormatError(f"{where} must be an object with 'role' and 'content', got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise FormatError(f"{where} has no {key!r}; it has {sorted(map(str, message))}")
        turns.append(_turn(message["role"], message["content"], where))
    return turns


def _turn(role: Any, content: Any, where: str) -> Turn:
    """A validated turn; a blank system message is allowed (many data sets write one), other blanks are not."""
    if role not in ROLES:
        raise FormatError(f"{where}: role {role!r} is not one of {', '.join(map(repr, ROLES))}")
    blank_system = role == "system" and isinstance(content, str) and not content.strip()
    problem = None if blank_system else text_problem(content)
    if problem:
        raise FormatError(f"{where}: content {problem}")
    return Turn(role, content, where)


def hh_to_turns(text: str, name: str) -> list[Turn]:
    """Split HH-RLHF text ("\\n\\nHuman: …\\n\\nAssistant: …") in field ``name`` into turns."""
    # Some copies drop the leading blank line; put it back so every turn starts with a marker.
    parts = _HH_MARKER.split("\n\n" + text.lstrip())
    # parts: ["", speaker, text, speaker, text, ...]
    return [_turn(_HH_ROLES[speaker], content.strip(), f"field {name!r} turn {i} ({speaker})")
            for i, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2]))]


def is_hh_text(value: Any) -> bool:
    """Whether ``value`` is HH-RLHF text: it opens with a human turn and has an assistant turn."""
    return isinstance(value, str) and value.lstrip().startswith("Human:") and "\n\nAssistant:" in value


def split_response(turns: list[Turn], name: str) -> tuple[list[Turn], str]:
    """(prompt turns, response): the response is the last turn, which must be the assistant's."""
    if not any(t.role == "assistant" for t in turns):
        raise FormatError(f"field {name!r} has no assistant message (the response)")
    if turns[-1].role != "assistant":
        raise FormatError(f"{turns[-1].where}: the last message must be the assistant's response, "
                          f"got role {turns[-1].role!r}")
    return turns[:-1], turns[-1].content


def render_prompt(turns: list[Turn], name: str) -> str:
    """The instruction text of a conversational prompt (rules in the module docstring)."""
    for turn in turns[1:]:
        if turn.role == "system":
            raise FormatError(f"{turn.where}: a system message may only come first")
    system = turns[0].content.strip() if turns and turns[0].role == "system" else ""
    dialogue = turns[1:] if turns and turns[0].role == "system" else turns
    if not dialogue or dialogue[-1].role != "user":
        got = f"role {dialogue[-1].role!r}" if dialogue else "no message"
        raise FormatError(f"field {name!r}: the prompt must end with a user message, got {got}")
    if len(dialogue) == 1:
        body = dialogue[0].content
    else:
        body = "\n\n".join(f"{SPEAKERS[t.role]}: {t.content}" for t in dialogue) + "\n\nAssistant:"
    return f"{system}\n\n{body}" if system else body


def single_response(value: Any, name: str) -> str:
    """The content of field ``name``, which must be a list of exactly one assistant message."""
    turns = messages_to_turns(value, name)
    if len(turns) != 1 or turns[0].role != "assistant":
        raise FormatError(f"field {name!r} must be one assistant message (the response), "
                          f"got roles {[t.role for t in turns]}")
    return turns[0].content


# -- the formats --------------------------------------------------------------------------------

def detect_format(keys: Collection[str]) -> str | None:
    """The format a record with these fields is in: "messages", "prompt", "implicit", or None (canonical/unknown)."""
    if "instruction" in keys:
        return None
    if "messages" in keys:
        return "messages"
    if "prompt" in keys:
        return "prompt"
    if "chosen" in keys and "rejected" in keys:
        return "implicit"
    return None


def from_messages(row: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Text]:
    """``messages`` → instruction (the turns before the last) and response (the last, assistant turn)."""
    prompt, response = split_response(messages_to_turns(row["messages"], "messages"), "messages")
    texts = {"response": Text(response, "messages")}
    if "instruction" in wanted:
        texts["instruction"] = Text(render_prompt(prompt, "messages"), "messages")
    return texts


def from_prompt(row: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Text]:
    """TRL prompt-only / prompt-completion / preference records, standard or conversational."""
    if "completion" in row and isinstance(row.get("label"), bool):
        raise FormatError("field 'label': unpaired preference records (prompt, completion, label) are not "
                          "supported; completions labelled false are not responses to learn from")
    prompt = row["prompt"]
    conversational = isinstance(prompt, list)
    texts = {}
    if "instruction" in wanted:
        texts["instruction"] = Text(render_prompt(messages_to_turns(prompt, "prompt"), "prompt")
                                    if conversational else prompt, "prompt")
    for name, column in (("response", "completion"), ("chosen", "chosen"), ("rejected", "rejected")):
        if name not in wanted or column not in row:
            continue  # a field the record lacks is reported by the caller, like any missing column
        value = row[column]
        if isinstance(value, list) != conversational:
            raise FormatError(f"field {column!r} is {_form(value)} but field 'prompt' is {_form(prompt)}; "
                              "use messages for both or text for both")
        texts[name] = Text(single_response(value, column) if conversational else value, column)
    return texts


def from_implicit_prompt(row: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Text]:
    """``chosen``/``rejected`` conversations (message lists or HH-RLHF text) sharing their prompt.

    Returns nothing for plain strings, which are then read as canonical columns.
    """
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, list) or isinstance(rejected, list):
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise FormatError(f"field 'chosen' is {_form(chosen)} but field 'rejected' is {_form(rejected)}; "
                              "use messages for both or text for both")
        to_turns = messages_to_turns
    elif is_hh_text(chosen) and is_hh_text(rejected):
        to_turns = hh_to_turns
    else:
        return {}
    prompt, chosen_text = split_response(to_turns(chosen, "chosen"), "chosen")
    rejected_prompt, rejected_text = split_response(to_turns(rejected, "rejected"), "rejected")
    _check_shared_prompt(prompt, rejected_prompt)
    texts = {"chosen": Text(chosen_text, "chosen"), "rejected": Text(rejected_text, "rejected")}
    if "instruction" in wanted:
        texts["instruction"] = Text(render_prompt(prompt, "chosen"), "chosen")
    return texts


def _check_shared_prompt(chosen: list[Turn], rejected: list[Turn]) -> None:
    """The two sides' turns before their responses must be the same: that common prefix is the prompt."""
    if chosen == rejected:
        return
    at = next((i for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r), min(len(chosen), len(rejected)))
    if at == 0:
        raise FormatError("fields 'chosen' and 'rejected' share no prefix: they differ from their first "
                          "message, so there is no common prompt")
    raise FormatError(f"fields 'chosen' and 'rejected' differ at message {at}, before their last message; "
                      "only the final assistant message may differ (the shared messages are the prompt)")


def _form(value: Any) -> str:
    return "a list of messages" if isinstance(value, list) else f"a {type(value).__name__}"


CONVERTERS: dict[str, Callable[[Mapping[str, Any], Collection[str]], dict[str, Text]]] = {
    "messages": from_messages,
    "prompt": from_prompt,
    "implicit": from_implicit_prompt,
}


def convert(row: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Text]:
    """The canonical fields among ``wanted`` that ``row``'s format supplies (empty for canonical or unknown rows)."""
    fmt = detect_format(row.keys())
    if fmt is None:
        return {}
    return {name: text for name, text in CONVERTERS[fmt](row, wanted).items() if name in wanted}
