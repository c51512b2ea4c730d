"""Errors raised below the HTTP layer.

Each class says *what* went wrong; `api/errors.py` maps them to HTTP status codes in one place.
"""

from __future__ import annotations


class SamgisError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(SamgisError):
    """The caller's input is wrong (HTTP 422). `field` names the offending input, dotted."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class MissingCapability(InvalidRequest):
    """The request needs something the loaded model cannot do (HTTP 422); the message names it."""


class UnknownSource(InvalidRequest):
    """A tile source name that is not configured (HTTP 422)."""

    def __init__(self, name: str, known: list[str] | None = None):
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:10])
            hint = f"; configured sources include: {shown}" + (" …" if len(known) > 10 else "")
        super().__init__("source", f"unknown tile source {name!r}{hint}")
        self.name = name


class UpstreamError(SamgisError):
    """A tile server or other upstream answered badly (HTTP 502)."""


class UpstreamTimeout(UpstreamError):
    """A tile server or other upstream did not answer in time (HTTP 504)."""


class ModelNotReady(SamgisError):
    """The model is still loading or could not be loaded (HTTP 503)."""


class Overloaded(SamgisError):
    """Too much work is already waiting (HTTP 503); `retry_after_s` says when to come back."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WeightsUnavailable(SamgisError):
    """Model weights are missing and cannot be downloaded; the message says how to provide them."""
