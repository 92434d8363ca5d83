"""What an online A/B outcome may be: true/false, or a finite number within ±1e12.

Outcomes are rates, counts, latencies, amounts: ±1e12 holds any of them, and keeps the
sums of squares and cubes behind the statistics far from float overflow (a viewer once
posted ±1.7e308 and every statistics page failed from then on).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidRequest

MAX_OUTCOME = 1e12


def outcome_value(value: Any) -> float:
    """``value`` as the number stored for an outcome (true is 1, false 0); else refused."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)):
        raise InvalidRequest("'value' must be a number or true/false")
    # Compared before any conversion: a 400-digit integer cannot become a float.
    if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > MAX_OUTCOME:
        raise InvalidRequest(f"'value' must be a finite number between {-MAX_OUTCOME:g} and "
                             f"{MAX_OUTCOME:g}, not {_shown(value)}")
    return float(value)


def usable_outcome(value: Any) -> bool:
    """Whether a stored value can enter the statistics (older versions stored any float)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(value) <= MAX_OUTCOME)


def _shown(value: int | float) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else f"{text[:20]}… ({len(text.lstrip('-'))} digits)"
