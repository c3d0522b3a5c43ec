"""SEAM_Adv: worse responses perturbed by a textattack attack until the reward model prefers them.

``source`` is the candidate source; ``attacks`` the recipes; ``victim`` the RM as
textattack's victim and the goal R(I∘r*) > R(I∘r); ``offline`` sets textattack
and NLTK up without downloads; ``stopwords`` the attacks' stopword lists.
"""

from seam_lightning.seam.sources.adversarial.attacks import ATTACKS, build_attack
from seam_lightning.seam.sources.adversarial.source import AdversarialSource, AttackStats
from seam_lightning.seam.sources.adversarial.victim import RewardFunctionWrapper, RewardModelWrapper, RewardWrapper

__all__ = [
    "ATTACKS",
    "AdversarialSource",
    "AttackStats",
    "RewardFunctionWrapper",
    "RewardModelWrapper",
    "RewardWrapper",
    "build_attack",
]
