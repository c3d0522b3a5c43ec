"""Prompt templates with named placeholders: checked before any request is sent.

A template is a ``str.format`` text whose placeholders must be exactly the fields
its user fills (each used, plainly, no others), or the name of a shipped
template. The SEAM_GPT source (Prompt 2) and the judge (Prompt 1) both check
their templates here, so a typo fails at construction, not after paid calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Formatter

_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def check_placeholders(template: str, fields: frozenset[str], name: str,
                       optional: frozenset[str] = frozenset()) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses each of ``fields``, plainly, and no other.

    ``optional`` fields may appear but need not. ``name`` is how the error calls the
    template (an argument name, "judge template").
    """
    if not isinstance(template, str):
        raise ValueError(f"{name} must be a string, got {type(template).__name__}")
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"{name} is not a valid format string ({e}); write a literal brace as '{{{{' or '}}}}'"
        ) from None
    allowed = ", ".join("{" + f + "}" for f in sorted(fields | optional))
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in fields | optional:
            raise ValueError(
                f"{name} has an unknown placeholder {{{field}}}; allowed are {allowed} "
                "(write a literal brace as '{{' or '}}')"
            )
        if spec or conversion:
            # '{n:03d}' or '{answer!r}' would change the text the cache key and the model see.
            raise ValueError(f"{name}: placeholder {{{field}}} must be plain, without a format spec or !conversion")
        used.add(field)
    missing = sorted(fields - used)
    if missing:
        raise ValueError(f"{name} lacks the placeholder(s) " + ", ".join("{" + m + "}" for m in missing)
                         + f"; it needs {', '.join('{' + f + '}' for f in sorted(fields))}")


def resolve_template(template: str, named: Mapping[str, str], fields: frozenset[str], name: str,
                     optional: frozenset[str] = frozenset()) -> str:
    """The checked template text for ``template``: a key of ``named``, or a template text itself.

    A bare word that names no template (a typo) is an error listing the names.
    """
    if isinstance(template, str) and template in named:
        text = named[template]
    elif isinstance(template, str) and _NAME.fullmatch(template):
        raise ValueError(f"{name}: no template named {template!r}; the named ones are "
                         f"{', '.join(sorted(named))} (or give a whole template text)")
    else:
        text = template
    check_placeholders(text, fields, name, optional)
    return text
