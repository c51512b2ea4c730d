"""Errors raised below the HTTP layer.

Each class says *what* went wrong; `api/errors.py` maps them to HTTP status codes in one place.
"""

from __future__ import annotations


class SamgisError(Exception):
    """Base class of every error this package raises on purpose.

    `message` is for the caller: it names what went wrong without internals. `detail` (optional) is for the
    operator's log only: upstream URLs, local paths, library messages.
    """

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidRequest(SamgisError):
    """The caller's input is wrong (HTTP 422). `field` names the offending input, dotted."""

    def __init__(self, field: str, message: str, detail: str | None = None):
        super().__init__(f"{field}: {message}", detail)
        self.field = field


class LimitExceeded(InvalidRequest):
    """The request is well formed but would cost more than a configured limit allows (HTTP 422).

    `limit`: the setting's name (e.g. "max_mask_pixels"; its environment variable is SAMGIS_ + upper case).
    """

    def __init__(self, field: str, message: str, limit: str):
        super().__init__(field, f"{message} (this server's {limit}, SAMGIS_{limit.upper()})")
        self.limit = limit


class ImageTooLarge(InvalidRequest):
    """The image has more pixels than the configured limit (HTTP 413)."""


class MissingCapability(InvalidRequest):
    """The request needs something the loaded model cannot do (HTTP 422); the message names it."""


class UnknownSource(InvalidRequest):
    """A tile source name that is not configured (HTTP 422)."""

    def __init__(self, name: str, known: list[str] | None = None):
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:10])
            hint = f"; configured sources include: {shown}" + (" …" if len(known) > 10 else "")
        shown = name if len(name) <= 80 else name[:80] + "…"
        super().__init__("source", f"unknown tile source {shown!r}{hint}")
        self.name = name


class UpstreamError(SamgisError):
    """A tile server or other upstream answered badly (HTTP 502)."""


class UpstreamTimeout(UpstreamError):
    """A tile server or other upstream did not answer in time (HTTP 504)."""


class DeadlineExceeded(SamgisError):
    """The request did not finish within its deadline (HTTP 504); the message names the setting."""


class ModelNotReady(SamgisError):
    """The model is still loading or could not be loaded (HTTP 503)."""


class Overloaded(SamgisError):
    """Too much work is already waiting (HTTP 503); `retry_after_s` says when to come back."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WeightsUnavailable(SamgisError):
    """Model weights are missing and cannot be downloaded; the message says how to provide them."""
