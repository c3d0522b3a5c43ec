"""SEAM-guided data augmentation (paper §8): contrast-instruction examples for the PM and the RM.

For a selected RL example (I, r), the contrast source retrieves instructions I*
that are similar to I but not the same (cosine similarity in the band), each with
its golden response r*. Two kinds of training data come out of each (I*, r*):

- for the PM's SFT set, the pair (I*, r*) — the right answer to the neighbouring
  question, so the policy learns to tell the two apart;
- for the RM's preference set, (I, chosen=r, rejected=r*) — the answer to another
  question is worse than the golden one, which is exactly the misjudgement SEAM
  measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seam_lightning.data.records import Record
from seam_lightning.seam.sources.contrast import ContrastSource


@dataclass
class Augmentations:
    """New SFT and preference examples (text fields only) and the RL ids they came from."""

    sft: list[dict[str, str]] = field(default_factory=list)
    preference: list[dict[str, str]] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)


def contrast_augmentations(source: ContrastSource, records: list[Record], per_prompt: int,
                           existing_sft: set[tuple[str, str]] = frozenset(),
                           existing_preference: set[tuple[str, str, str]] = frozenset()) -> Augmentations:
    """Up to ``per_prompt`` contrast examples per record (paper: 5), skipping ones already present.

    Records are processed in the order given; an SFT pair reached from two selected
    prompts is added once. ``existing_*`` hold the examples added earlier (SFT as
    (instruction, response), preference as (instruction, chosen, rejected)).
    """
    if per_prompt < 1:
        raise ValueError(f"augmentations per prompt must be >= 1, got {per_prompt}")
    out = Augmentations()
    if not records:
        return out
    seen_sft, seen_pref = set(existing_sft), set(existing_preference)
    source.candidates([r.text["instruction"] for r in records], [r.text["response"] for r in records], per_prompt)
    for record, matches in zip(records, source.last_matches):
        instruction, golden = record.text["instruction"], record.text["response"]
        for match in matches:
            if (match.instruction, match.response) not in seen_sft:
                seen_sft.add((match.instruction, match.response))
                out.sft.append({"instruction": match.instruction, "response": match.response})
            if (instruction, golden, match.response) not in seen_pref:
                seen_pref.add((instruction, golden, match.response))
                out.preference.append({"instruction": instruction, "chosen": golden, "rejected": match.response})
                out.sources.append(record.id)
    return out
