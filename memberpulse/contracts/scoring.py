"""The scoring knobs and their defaults: the one definition the scorer and ``Settings`` both read.

The rules they parametrise: docs/architecture.md, "Scoring" (``memberpulse.transforms.score``). The defaults are
here, not on the Settings fields, because the transforms may not import settings (the layers in
``.importlinter``) and ``transforms.ScoringParams()`` scores with the defaults on its own; Settings' fields
``MEMBERPULSE_HALF_LIFE_DAYS``, ``_ACTIVE_DAYS`` and ``_AT_RISK_DAYS`` take theirs from here and hold the
constraints (half life > 0, 0 ≤ active_days ≤ at_risk_days).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringParams:
    """How members are scored: the score halves every ``half_life_days``; a valid member is ``active`` up to
    ``active_days`` since their last activity, ``at_risk`` up to ``at_risk_days``, ``inactive`` after."""

    half_life_days: float = 7.0
    active_days: float = 7.0
    at_risk_days: float = 30.0
