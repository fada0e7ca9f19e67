"""HTTP details every client here shares. Prefect-free.

``Retry-After`` is parsed in this one place (the ACME client, ARI and the Cloudflare
solver all read it): RFC 9110 §10.2.3 allows delta-seconds or an HTTP date.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After (delta seconds or HTTP date) as seconds >= 0; ``None`` if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
