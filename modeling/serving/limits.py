"""Limits a request meets before the app does any work for it: its body's size, its host, its origin.

* `BodyLimit` (ASGI middleware): a body whose `Content-Length` says it is larger than its route's limit is answered
  413 before a byte of it is read; a body without one (chunked) is read only up to the limit, then answered 413.
  Uploads (`/gradio_api/upload`) may be as large as the app's upload limit; every other route takes `MAX_BODY_BYTES`.
* `allowed_hosts` / `cors_origins`: the `Host` names the app answers (loopback, the Hugging Face Space's own host,
  and what `FASHION_ALLOWED_HOSTS` adds) and the origins other web pages may call it from (none unless
  `FASHION_CORS_ORIGINS` lists them): DNS rebinding and cross-site calls get nothing.
* `refusal`: the JSON reply of every refusal (`{"error": "<message>"}`), with `Retry-After` for a 503.

`modeling.serving.http.app_kwargs` puts these middlewares on the app Gradio creates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import orjson

MAX_BODY_BYTES = 1_000_000  # JSON routes and Gradio's own API calls: a search request is a few hundred bytes
UPLOAD_ROUTES = ("/gradio_api/upload",)
MULTIPART_OVERHEAD = 64_000  # boundaries and part headers around an upload of the largest allowed size
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
RETRY_AFTER_S = 1


class BodyTooLarge(Exception):
    """Raised into the app by `BodyLimit` when a body grows past its limit (the reply is 413 whatever the app
    does with it)."""


def refusal_headers(status: int) -> dict[str, str]:
    """Headers of a refusal besides its JSON type: a 503 says when to try again."""
    return {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}


def refusal(status: int, message: str, headers: Mapping[str, str] | None = None) -> tuple[dict, bytes]:
    """(ASGI `http.response.start`, body) of a refusal: JSON `{"error": message}`."""
    body = orjson.dumps({"error": message})
    extra = {**refusal_headers(status), **(headers or {})}
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())]
    return {"type": "http.response.start", "status": status, "headers": raw}, body


async def send_refusal(send, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
    start, body = refusal(status, message, headers)
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit:,} bytes."


class BodyLimit:
    """ASGI middleware: bodies over their route's limit are refused with 413, by `Content-Length` before any of the
    body is read, else as soon as what was read passes the limit (the rest is never read)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, route_limits: Mapping[str, int] | None = None):
        self.app = app
        self.limit = int(limit)
        self.route_limits = dict(route_limits or {})

    def limit_for(self, path: str) -> int:
        return next((v for prefix, v in self.route_limits.items() if path.startswith(prefix)), self.limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared == -1:
            return await send_refusal(send, 400, "The Content-Length header is not a number of bytes.")
        if declared is not None and declared > limit:
            return await send_refusal(send, 413, _too_large(limit), {"Connection": "close"})
        state = {"read": 0, "over": False, "answered": False}

        async def capped_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["over"] = True
                    raise BodyTooLarge(_too_large(limit))
            return message

        async def checked_send(message):
            if not state["over"]:
                return await send(message)
            if not state["answered"]:  # whatever the app made of the cut body, the client learns it was too large
                state["answered"] = True
                await send_refusal(send, 413, _too_large(limit), {"Connection": "close"})

        try:
            await self.app(scope, capped_receive, checked_send)
        except Exception:  # noqa: BLE001 - BodyTooLarge, or whatever the app made of a cut body
            if not state["over"]:
                raise
        if state["over"] and not state["answered"]:
            await send_refusal(send, 413, _too_large(limit), {"Connection": "close"})


def _content_length(scope) -> int | None:
    """The declared body size; None when absent, -1 when it is not a number."""
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else -1
    return None


def upload_route_limits(max_file_size: int) -> dict[str, int]:
    """The body limit of Gradio's upload route: the largest allowed file and its multipart wrapping."""
    return {route: int(max_file_size) + MULTIPART_OVERHEAD for route in UPLOAD_ROUTES}


def _env_names(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def allowed_hosts(extra: Sequence[str] = ()) -> list[str]:
    """The `Host` names the app answers: loopback, the Space's own host (`SPACE_HOST`, set on Hugging Face
    Spaces), `extra` (e.g. the address it serves on) and `FASHION_ALLOWED_HOSTS` (comma-separated; "*.example.com"
    matches subdomains, "*" any host)."""
    hosts = [*LOOPBACK_HOSTS, *_env_names("SPACE_HOST"), *extra, *_env_names("FASHION_ALLOWED_HOSTS")]
    return list(dict.fromkeys(h for h in hosts if h and h not in ("0.0.0.0", "::")))


def cors_origins() -> list[str]:
    """The origins other web pages may call the app from (`FASHION_CORS_ORIGINS`, comma-separated, e.g.
    "https://shop.example.com"); none by default: a cross-origin reply carries no Access-Control-Allow-Origin."""
    return _env_names("FASHION_CORS_ORIGINS")


__all__ = ["MAX_BODY_BYTES", "RETRY_AFTER_S", "BodyLimit", "BodyTooLarge", "allowed_hosts", "cors_origins",
           "refusal", "refusal_headers", "send_refusal", "upload_route_limits"]
