"""What of a config may be shown (the page, `check`, errors): values that can hold a secret are masked."""
from __future__ import annotations

import re
from typing import Any

# Argument names that look like secrets: their values are masked wherever the chain is shown.
SECRET_KEY_PATTERN = re.compile(
    r"pass|secret|token|key|auth|credential|cookie|session|private|signature|dsn",
    re.IGNORECASE,
)
MASK = "***"


def looks_secret(name: Any) -> bool:
    """Whether an argument's name suggests its value is a secret."""
    return isinstance(name, str) and SECRET_KEY_PATTERN.search(name) is not None


def can_hold_secret(value: Any) -> bool:
    """Strings can, and containers holding one (an object's keys count); booleans, numbers and null cannot."""
    if value is None or isinstance(value, (bool, int, float)):
        return False
    if isinstance(value, dict):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return any(can_hold_secret(item) for item in value)
    return True


def shown_value(value: Any) -> Any:
    """A leaf value as it may be shown: JSON's own types as they are, any other object (given from Python) as its repr."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)
