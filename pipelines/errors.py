"""The compress job's error: every launch or run failure it reports as one line."""

from __future__ import annotations

from commer_core.errors import CommerError


class CompressError(CommerError, RuntimeError):
    """The job cannot start or did not commit; the message says why (no traceback needed)."""
