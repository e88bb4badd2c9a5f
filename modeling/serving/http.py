"""Plain JSON routes beside the Gradio app, and the security headers of every page the app serves.

Gradio's API protocol answers a call in two requests (POST the arguments, then read a server-sent event stream),
and runs each call through its queue and component machinery: about 60 requests/s on two cores at best with the
service's batching (20 before it), whatever the engine does. The structured-data searches are also offered as one-request JSON routes over the same
`SearchService` (same validation, same batching, same results), generated from the same declaration as the Gradio
API's endpoints (`modeling.serving.endpoints.ENDPOINTS`):

    POST /api/v1/search_text    {"query": "red summer dress", "k": 10, "model": "", "gender": "Any", ...}
    POST /api/v1/similar_items  {"item_id": "15970", "k": 10, "rerank_weight": 0.0, ...}
    POST /api/v1/composed_item  {"item_id": "15970", "text": "make it blue", "k": 10, ...}
    GET  /api/v1/images/{item_id}   the catalog item's photo (what results' "image_url" points at)

A refused request answers HTTP 400 with `{"error": "<a message for the user>"}` and logs one line; an unexpected
failure answers 500 with a generic message and logs the traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence

import orjson
from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from modeling.serving.admission import Overloaded
from modeling.serving.endpoints import ENDPOINTS, Endpoint
from modeling.serving.limits import (MAX_BODY_BYTES, BodyLimit, BodyTooLarge, allowed_hosts, cors_origins, refusal_headers,
                                     upload_route_limits)
from modeling.serving.service import REFUSED, SearchService, shorten, user_message

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


class RequestRefused(Exception):
    """A request the routes refuse before it reaches the service: 400 (bad JSON, unknown fields), 415 (not JSON)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


JSON_TYPES = ("application/json",)


def _check_content_type(request: Request) -> None:
    """JSON routes take `application/json` only: a web page cannot send that cross-site without a preflight (which
    is refused unless CORS origins are configured), unlike text/plain or a form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise RequestRefused(f"Send the request as JSON (Content-Type: application/json); got "
                             f"{shorten(media or 'no content type')}.", status=415)


def _fields(endpoint: Endpoint, body: bytes) -> dict:
    """The body's fields, checked against the endpoint's declaration (a JSON object, only its fields, the
    required ones present); the values themselves are checked by `Endpoint.arguments`. The body's size was
    checked before it was read (`modeling.serving.limits.BodyLimit`)."""
    required, optional = endpoint.required, endpoint.optional
    try:
        payload = json.loads(body or b"{}")
    except RecursionError:  # nested deeper than the parser's stack: bad input, not a server failure
        raise RequestRefused("The request body is nested too deeply; send a flat JSON object of fields.") from None
    except (ValueError, UnicodeDecodeError):
        raise RequestRefused("The request body is not valid JSON; send an object such as "
                             f"{{{', '.join(f'{chr(34)}{f}{chr(34)}: ...' for f in required)}}}.") from None
    if not isinstance(payload, dict):
        raise RequestRefused("The request body must be a JSON object with named fields.")
    unknown = sorted(set(payload) - set(required) - set(optional))
    if unknown:
        names = ", ".join(repr(u[:30]) for u in unknown[:5])
        raise RequestRefused(f"Unknown field(s) {names}; {endpoint.name} takes "
                             f"{', '.join((*required, *optional))}.")
    missing = [f for f in required if f not in payload]
    if missing:
        raise RequestRefused(f"Missing field(s) {', '.join(missing)}; {endpoint.name} needs {', '.join(required)}.")
    return {**optional, **payload}


def _refused(request: Request, status: int, message: str) -> Response:
    # A bad request logs one line; a 503 only at debug level (under overload thousands a second would flood the
    # log; the service's gates count them).
    logger.log(logging.DEBUG if status == 503 else logging.INFO, "refused %s %s (%d): %s", request.method,
               request.url.path, status, message)
    return JSONResponse({"error": message}, status_code=status, headers=refusal_headers(status))


def json_routes(service: SearchService) -> list[APIRoute]:
    """The JSON routes over `service` (pass them to FastAPI as `routes=`). They run on the server's event loop and
    await the service's encoder and search threads: no thread per waiting request."""

    def search_route(endpoint: Endpoint) -> Callable:
        async def route(request: Request):
            try:
                _check_content_type(request)
                data = await endpoint.call_async(service, _fields(endpoint, await request.body()))
            except (RequestRefused, *REFUSED) as error:
                return _refused(request, getattr(error, "status", 400), user_message(error))
            except Overloaded as error:  # at a bound: refused before any work, the client retries
                return _refused(request, 503, str(error))
            except BodyTooLarge as error:  # a body without Content-Length cut at the limit: BodyLimit answers 413
                return _refused(request, 413, str(error))
            except Exception:  # a bug: logged in full, the client gets no internals
                logger.exception("%s failed", request.url.path)
                return JSONResponse({"error": "The search failed unexpectedly; the error was logged."},
                                    status_code=500)
            # orjson (a Gradio dependency) encodes an answer several times faster than the json module
            return Response(orjson.dumps(data), media_type="application/json")

        route.__name__ = f"api_{endpoint.name}"
        return route

    async def item_image(item_id: str, request: Request):
        try:
            path = await service.run_async(service.image_path, item_id)
        except REFUSED as error:
            return JSONResponse({"error": user_message(error)}, status_code=404)
        except Overloaded as error:
            return _refused(request, 503, str(error))
        if not path or not os.path.isfile(path):
            return JSONResponse({"error": "This item has no photo on this server."}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    routes = [APIRoute(f"{API_PREFIX}/{name}", search_route(endpoint), methods=["POST"], response_model=None,
                       summary=f"{name} (structured results)") for name, endpoint in ENDPOINTS.items()]
    routes.append(APIRoute(f"{API_PREFIX}/images/{{item_id}}", item_image, methods=["GET"], response_model=None,
                           summary="a catalog item's photo"))
    return routes


# -- security headers ---------------------------------------------------------------------------------------------
def security_headers(frame_ancestors: str = "'self'") -> dict[str, str]:
    """The headers every response carries. The Content-Security-Policy allows what Gradio's page needs: its
    inline bootstrap script and styles, its own server for scripts, data, websockets/event streams and files,
    data:/blob: images and media (uploads, webcam), and Google Fonts (the default theme's fonts); nothing else
    may run or be framed. `frame_ancestors` lists who may embed the page ("'self'" by default; a Hugging Face
    Space is embedded by huggingface.co)."""
    csp = "; ".join([
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",
        "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
        "font-src 'self' data: https://fonts.gstatic.com",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "connect-src 'self' ws: wss: data: blob:",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        f"frame-ancestors {frame_ancestors}",
    ])
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "same-origin",
               "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=()"}
    if frame_ancestors == "'self'":
        headers["X-Frame-Options"] = "SAMEORIGIN"  # the older header: it cannot name other origins
    return headers


def default_frame_ancestors() -> str:
    """'self', plus huggingface.co when running as a Hugging Face Space (SPACE_ID is set there)."""
    return "'self' https://huggingface.co https://*.hf.space" if os.environ.get("SPACE_ID") else "'self'"


class SecurityHeaders:
    """ASGI middleware adding `headers` to every HTTP response that does not set them itself (pure ASGI, so
    streamed responses such as Gradio's event streams pass through untouched)."""

    def __init__(self, app, headers: Mapping[str, str]):
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self.headers if k not in present)]
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def server_error(headers: Mapping[str, str]) -> Callable:
    """The reply to an unexpected failure (Starlette's last-resort handler, outside every middleware): a generic
    message with the security headers; the traceback goes to the log."""

    async def handler(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": "The server failed unexpectedly; the error was logged."}, status_code=500,
                            headers=dict(headers))

    return handler


@contextlib.asynccontextmanager
async def own_cors_only(app):
    """Lifespan of the app: Gradio wraps every app it launches in a CORS middleware of its own that grants any
    origin (with credentials) when the Host is not loopback, and steps aside only for a *parent* app configuring
    Starlette's `CORSMiddleware`. At start-up, before the first request, that middleware is told the app itself is
    its parent (it has our `CORSMiddleware`), and the middleware stack is rebuilt without its grants.
    tests/test_app_security.py checks the result from outside."""
    for middleware in getattr(app, "user_middleware", []):
        if getattr(middleware.cls, "__name__", "") == "CustomCORSMiddleware":
            middleware.kwargs["parent_app"] = app
    app.middleware_stack = None
    yield


def app_kwargs(service: SearchService, frame_ancestors: str | None = None, max_file_size: int | None = None,
               hosts: Sequence[str] = (), origins: Sequence[str] | None = None) -> dict:
    """Keyword arguments for the FastAPI app Gradio creates (`launch(app_kwargs=...)`): the JSON routes and the
    middlewares, outermost first: the security headers (on every reply: refusals, preflights, error pages), the
    host allow-list (`limits.allowed_hosts` plus `hosts`), CORS (only `origins`, default `limits.cors_origins()`:
    none; Gradio's own CORS handling then stays out), the body limits (uploads up to `max_file_size`)."""
    headers = security_headers(frame_ancestors or default_frame_ancestors())
    uploads = upload_route_limits(max_file_size) if max_file_size else {}
    origins = cors_origins() if origins is None else list(origins)
    return {"routes": json_routes(service), "lifespan": own_cors_only,
            "exception_handlers": {Exception: server_error(headers)},
            "middleware": [Middleware(SecurityHeaders, headers=headers),
                           Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(hosts)),
                           Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                                      allow_headers=["content-type"], allow_credentials=False),
                           Middleware(BodyLimit, limit=MAX_BODY_BYTES, route_limits=uploads)]}


__all__ = ["API_PREFIX", "ENDPOINTS", "SecurityHeaders", "app_kwargs", "json_routes", "security_headers"]
