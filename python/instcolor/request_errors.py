"""Errors of request handling and their HTTP status codes: what ``instcolor serve`` answers with,
raised by its batcher and protocol codecs and by the hint editor's core (:mod:`instcolor.ui.editor`),
which is why they live below both.

Every error body is JSON ``{"error": "<what went wrong, naming the input>"}`` plus ``"field"``
when one request option is at fault. Nothing here imports a web framework."""
from __future__ import annotations


class ServeError(Exception):
    """An error answered with ``status``; ``field`` names the request option at fault, if one."""

    status = 500

    def __init__(self, message: str, *, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict:
        out = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class BadRequest(ServeError):
    """The body is not a usable image or request (empty, truncated, not an image, malformed)."""

    status = 400


class PayloadTooLarge(ServeError):
    """The body is over --max-body-mb, or the image header declares more than --max-pixels."""

    status = 413


class UnsupportedMediaType(ServeError):
    status = 415


class InvalidOption(ServeError):
    """A request option (query parameter, JSON option, v2 input or parameter) that does not fit."""

    status = 422

    def __init__(self, field: str, message: str, **kw):
        super().__init__(f"{field}: {message}", field=field, **kw)


class ServiceUnavailable(ServeError):
    """Queue full, model not loaded yet, or shutting down; the client may retry after a while."""

    status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message, headers={"Retry-After": str(max(1, int(round(retry_after_s))))})


class GatewayTimeout(ServeError):
    """The request waited longer than --timeout-s."""

    status = 504


class ClientGone(ServeError):
    """The client disconnected; nothing reaches it (logged with nginx's 499)."""

    status = 499


class InternalError(ServeError):
    status = 500
