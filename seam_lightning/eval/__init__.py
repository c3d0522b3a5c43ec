"""Evaluation: reward-model accuracy (Q_RM), policy quality by a gold RM or an LLM judge (Q_PM), RM–reference match rate.

Run from the shell as ``python -m seam_lightning.eval <command>`` (see :mod:`seam_lightning.eval.__main__`).
"""

from seam_lightning.eval.judge import JUDGE_PROMPT, LLMJudge, check_judge_template, parse_rating
from seam_lightning.eval.quality import (
    generate_responses,
    match_rate,
    preference_accuracy,
    reference_preferences,
    reward_scores,
)
from seam_lightning.eval.stats import MeanCI, mean_ci

__all__ = [
    "JUDGE_PROMPT", "LLMJudge", "MeanCI", "check_judge_template", "generate_responses", "match_rate", "mean_ci",
    "parse_rating", "preference_accuracy", "reference_preferences", "reward_scores",
]
