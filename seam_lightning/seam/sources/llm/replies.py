"""Split a chat model's reply into separate answers.

Chat models format "give me N answers" in many ways. `split_answers` recognises,
in this order of preference:

1. labelled items: ``Answer 1:``, ``**Response 2** -``, ``### Worse answer 3``;
2. numbered items: ``1.``, ``1)``, ``(1)``, ``[1]``, ``1:``, also in bold (``**1.**``);
3. bulleted items: ``-``, ``*``, ``•``, ``+``;
4. otherwise paragraphs separated by blank lines.

An item runs until the next item marker, so multi-line and multi-paragraph
answers stay whole. Lines inside fenced code blocks (```` ``` ````) never start an
item: answers to programming questions often hold numbered code or lists.
Nested lists inside an item are kept in the item: a marker counts only if it is
no more indented than the first one, has the same style, and (numbered) has a
larger number than the previous item, so a list restarting at 1 inside an
answer is not split out.
"""

from __future__ import annotations

import re
import textwrap
from typing import NamedTuple

_BOLD = r"(?:\*\*|__)"
_LABEL_WORDS = (
    r"(?:(?:worse|wrong|incorrect|bad|poor|flawed|lower[- ]quality)\s+)?"
    r"(?:answer|response|reply|option|version|example|candidate)"
)
# "Answer 1:", "**Answer 1:**", "### Response 2 -", "Answer #3", "Answer 4" alone on its line.
# No two [ \t]* may meet with only optional parts between them: a long run of blanks would
# then be split every possible way (seconds per line; cubic in its length).
_LABELLED = re.compile(
    rf"^(?P<indent>[ \t]*)(?:\#{{1,6}}[ \t]*)?(?:{_BOLD}[ \t]*)?{_LABEL_WORDS}[ \t]*\#?(?P<num>\d{{1,3}})"
    rf"[ \t]*(?:{_BOLD}[ \t]*)?(?:[:.)\-–—]+[ \t]*{_BOLD}?|(?=$))",
    re.IGNORECASE,
)
# "1.", "1)", "1:", "(1)", "[1]", optionally in bold; followed by a space, the line's end or
# (sloppy "1.Paris") a letter, never a digit: "3.14 is pi" or "12:30" does not start an item.
_NUMBERED = re.compile(
    rf"^(?P<indent>[ \t]*)(?:\#{{1,6}}[ \t]+)?{_BOLD}?"
    rf"(?:\((?P<paren>\d{{1,3}})\)|\[(?P<bracket>\d{{1,3}})\]|(?P<num>\d{{1,3}})(?P<punct>[.):]))"
    rf"{_BOLD}?(?=[ \t]|$|[^\W\d_])[ \t]*"
)
_BULLET = re.compile(r"^(?P<indent>[ \t]*)(?P<mark>[-*•+])(?:[ \t]+|$)")
_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$")  # "---", "***", "___": a separator, not content
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
# A first line that introduces the list rather than answering: "Sure! Here are 3 worse answers:".
_INTRO = re.compile(
    r"^(?:sure|certainly|okay|ok|of course|absolutely|here (?:are|is)|below (?:are|is)|the following)\b|:$",
    re.IGNORECASE,
)
# A last paragraph that comments on the list: "Note: each answer contains ...", "I hope this helps".
_OUTRO = re.compile(
    r"^(?:note\b|notes\b|these (?:answers|responses)|each of (?:these|the above)|all of (?:these|the above)"
    r"|i hope|hope this|let me know|feel free)",
    re.IGNORECASE,
)
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("„", "“")]


class _Marker(NamedTuple):
    line: int  # index of the line that starts the item
    indent: int  # columns before the marker (tabs count 4)
    style: str  # "label", "(", "[", ".", ")", ":" or the bullet character
    number: int | None  # None for bullets
    rest: str  # the line after the marker


def split_answers(reply: str, limit: int | None = None) -> list[str]:
    """The separate answers in ``reply``, in order: markers, quotes and blank edges stripped.

    Empty items and exact duplicates are dropped; a preamble line ("Here are 3
    worse answers:") before a list is dropped. ``limit`` keeps at most that many.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    lines = reply.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    code = _in_code(lines)
    items = None
    for find in (_labelled, _numbered, _bulleted):
        markers = _sequence(find(lines, code))
        if markers and _is_list(lines, markers):
            items = _items(lines, markers)
            break
    if items is None:
        items = _paragraphs(lines, code)
    out, seen = [], set()
    for item in items:
        text = _clean(item)
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out if limit is None else out[:limit]


def _in_code(lines: list[str]) -> list[bool]:
    """Per line: inside a fenced code block (the fence lines themselves included)."""
    inside, flags = False, []
    for line in lines:
        fence = bool(_FENCE.match(line))
        flags.append(inside or fence)
        if fence:
            inside = not inside
    return flags


def _indent(prefix: str) -> int:
    return len(prefix.expandtabs(4))


def _labelled(lines: list[str], code: list[bool]) -> list[_Marker]:
    out = []
    for i, line in enumerate(lines):
        m = None if code[i] else _LABELLED.match(line)
        if m:
            out.append(_Marker(i, _indent(m["indent"]), "label", int(m["num"]), line[m.end():]))
    return out


def _numbered(lines: list[str], code: list[bool]) -> list[_Marker]:
    out = []
    for i, line in enumerate(lines):
        m = None if code[i] else _NUMBERED.match(line)
        if m:
            if m["paren"]:
                style, num = "(", m["paren"]
            elif m["bracket"]:
                style, num = "[", m["bracket"]
            else:
                style, num = m["punct"], m["num"]
            out.append(_Marker(i, _indent(m["indent"]), style, int(num), line[m.end():]))
    return out


def _bulleted(lines: list[str], code: list[bool]) -> list[_Marker]:
    out = []
    for i, line in enumerate(lines):
        m = None if code[i] or _RULE.match(line) else _BULLET.match(line)
        if m:
            out.append(_Marker(i, _indent(m["indent"]), m["mark"], None, line[m.end():]))
    return out


def _sequence(markers: list[_Marker]) -> list[_Marker]:
    """The top-level items: same style and no deeper indent than the first; numbers increasing."""
    if not markers:
        return []
    first = markers[0]
    kept = [first]
    for m in markers[1:]:
        if m.style != first.style or m.indent > first.indent:
            continue  # a nested list or another kind of list inside an item
        if m.number is not None and m.number <= kept[-1].number:
            continue  # numbering restarted: a list inside the current answer
        kept.append(m)
    return kept


def _is_list(lines: list[str], markers: list[_Marker]) -> bool:
    """Two or more items; or one item with nothing but a one-line preamble before it."""
    if len(markers) >= 2:
        return True
    before = [line for line in lines[: markers[0].line] if line.strip()]
    return not before or (len(before) == 1 and bool(_INTRO.search(before[0].strip())))


def _items(lines: list[str], markers: list[_Marker]) -> list[str]:
    """The text of each item: the marker line's rest plus the lines up to the next marker."""
    items = []
    ends = [m.line for m in markers[1:]] + [len(lines)]
    for m, end in zip(markers, ends):
        # Continuation lines are usually indented under the marker: dedent them as a block.
        body = textwrap.dedent("\n".join(lines[m.line + 1:end]))
        items.append((m.rest.strip() + "\n" + body).strip())
    if items:
        items[-1] = _drop_outro(items[-1])
    return items


def _drop_outro(text: str) -> str:
    """Drop a closing comment paragraph ("Note: ...") that follows the last item after a blank line."""
    parts = re.split(r"\n[ \t]*\n", text)
    if len(parts) > 1 and _OUTRO.match(parts[-1].strip()):
        return "\n\n".join(parts[:-1])
    return text


def _paragraphs(lines: list[str], code: list[bool]) -> list[str]:
    """Blank-line separated blocks (never split inside a code fence); a leading intro line is dropped."""
    blocks, current = [], []
    for line, in_code in zip(lines, code):
        if not in_code and (not line.strip() or _RULE.match(line)):
            if current:
                blocks.append("\n".join(current))
                current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    if len(blocks) > 1 and "\n" not in blocks[0].strip() and _INTRO.search(blocks[0].strip()):
        blocks = blocks[1:]
    if len(blocks) > 1:
        blocks[-1:] = [] if _OUTRO.match(blocks[-1].strip()) else blocks[-1:]
    return blocks


def _clean(text: str) -> str:
    """Strip whitespace, separator rules at either end and one pair of surrounding quotes."""
    lines = text.split("\n")
    # Only at the ends: a "---" inside an answer (YAML, a table) is content. Indices, not
    # pop(0): that is quadratic in the number of leading rule lines.
    start, end = 0, len(lines)
    while start < end and (not lines[start].strip() or _RULE.match(lines[start])):
        start += 1
    while end > start and (not lines[end - 1].strip() or _RULE.match(lines[end - 1])):
        end -= 1
    text = "\n".join(lines[start:end]).strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            inner = text[len(left): -len(right)]
            # Only a pair that wraps the whole item: '"a" and "b"' keeps its quotes.
            if left not in inner and right not in inner:
                text = inner.strip()
            break
    return text
