"""The TF Serving REST API as a Starlette app, plus /healthz, /readyz, /metrics and
/openapi.json; bearer-token check and JSON access log as plain ASGI middleware.

>>> import tempfile
>>> from starlette.testclient import TestClient
>>> from tfllm_serving.manager import ModelManager
>>> config = ServerConfig(model_repo=tempfile.mkdtemp())
>>> manager = ModelManager(config)
>>> manager.reconcile()
>>> client = TestClient(create_app(manager, config))   # `uvicorn.run(app, ...)` serves it
>>> client.get("/healthz").status_code
200
>>> response = client.get("/v1/models/sst2")
>>> response.status_code, response.json()
(404, {'error': 'Could not find any versions of model sst2'})
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServerConfig
from .errors import DeadlineExceeded, InvalidInput, NotFound, PayloadTooLarge, ServingError
from .feedback import FeedbackStore, request_id
from .inputs import (
    format_classify,
    format_outputs,
    format_predictions,
    parse_classify_body,
    parse_predict_body,
)
from .manager import ModelManager
from .openapi import openapi_spec

log = logging.getLogger(__name__)
access_log = logging.getLogger("tfllm_serving.access")

# name[/versions/V | /labels/L][/metadata | :verb]; names exclude '/' and ':'.
_MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<metadata>metadata)|:(?P<verb>[A-Za-z]+))?$"
)
# Probes stay open without a token: they reveal nothing but up/down.
_AUTH_EXEMPT = ("/healthz", "/readyz")


def json_response(content: Any, status_code: int = 200) -> Response:
    # TF Serving's JSON allows NaN/Infinity in float outputs; Starlette's JSONResponse
    # would raise on them.
    body = json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def error_response(err: ServingError) -> Response:
    return json_response({"error": str(err)}, err.http_status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`PayloadTooLarge` past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds {limit} bytes")
        except ValueError as exc:
            raise InvalidInput("invalid Content-Length header") from exc
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput("malformed JSON: nested too deeply") from exc


class ModelRoutes:
    """Handlers for everything under ``/v1/models/``."""

    def __init__(self, manager: ModelManager, config: ServerConfig) -> None:
        self.manager = manager
        self.config = config
        self.metrics = manager.metrics
        self.feedback = (FeedbackStore(config.feedback, shared=config.worker_count() > 1)
                         if config.feedback.enabled else None)

    def _metric_model(self, name: str) -> str:
        # Unknown names (typos, fuzzing) share one label value: bounded cardinality.
        return name if name in self.manager.loaded() or name in self.manager.model_names() \
            else "_unknown"

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        rest = request.path_params["rest"]
        match = _MODEL_PATH.match(rest)
        name, version_label, method = "_unknown", "", "unknown"
        try:
            if match is None:
                raise NotFound(f"Malformed request: {request.method} /v1/models/{rest}")
            name = match["name"]
            method = "metadata" if match["metadata"] else (match["verb"] or "status")
            version = None
            if match["version"] is not None:
                if not match["version"].isdigit():
                    raise InvalidInput(f"version must be an integer, got {match['version']!r}")
                version = int(match["version"])
            label = match["label"]
            response, version_label = await self._dispatch(request, method, name, version, label)
        except ServingError as err:
            response = error_response(err)
        except Exception as exc:  # noqa: BLE001 - the client gets JSON, the log the trace
            log.exception("request failed", extra={"event": "internal_error", "path": rest})
            response = json_response({"error": f"internal error: {type(exc).__name__}: {exc}"},
                                     500)
        self.metrics.observe_request(
            self._metric_model(name), version_label, method, response.status_code,
            time.perf_counter() - started, api="rest",
        )
        return response

    async def _dispatch(
        self, request: Request, method: str, name: str, version: int | None, label: str | None
    ) -> tuple[Response, str]:
        want_get = method in ("status", "metadata")
        if want_get != (request.method == "GET"):
            raise _MethodNotAllowed(f"{request.method} is not allowed for {method}")
        if method == "status":
            statuses = self.manager.model_status(name, version, label)
            body = {"model_version_status": [s.to_json() for s in statuses]}
            return json_response(body), str(version or "")
        servable = self.manager.resolve(name, version, label)
        runtime = servable.runtime
        if method == "metadata":
            body = {
                "model_spec": {"name": name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": runtime.signature_defs()},
            }
            return json_response(body), str(servable.version)
        if method == "feedback":
            return await self._feedback(request, name, servable), str(servable.version)
        if method not in ("predict", "classify"):
            if method == "regress":
                raise InvalidInput("regress is not supported: these models have no regression "
                                   "signature")
            raise NotFound(f"Malformed request: unknown method :{method}")
        limits = self.config.limits

        rid = request_id(request.headers.get("x-request-id"))

        async def answer() -> dict[str, Any]:
            # The body read counts too: a client trickling bytes cannot hold a slot forever.
            data = decode_json(await read_body(request, limits.max_body_bytes))
            if method == "classify":
                parsed = parse_classify_body(data, runtime, limits.max_instances)
                out = await asyncio.wrap_future(servable.submit(parsed.batch))
                self._log_predictions(name, servable.version, parsed, out, runtime, rid)
                return {"result": format_classify(out, runtime)}
            parsed, row_format = parse_predict_body(data, runtime, limits.max_instances)
            out = await asyncio.wrap_future(servable.submit(parsed.batch))
            self._log_predictions(name, servable.version, parsed, out, runtime, rid)
            if row_format:
                return {"predictions": format_predictions(parsed, out, runtime)}
            return {"outputs": format_outputs(out)}

        try:
            # wait_for, not asyncio.timeout: setup.cfg still allows Python 3.10.
            body = await asyncio.wait_for(answer(), limits.request_timeout_seconds)
        except asyncio.TimeoutError as exc:  # noqa: UP041 - distinct from TimeoutError on 3.10
            raise DeadlineExceeded(
                f"request exceeded the {limits.request_timeout_seconds} s timeout"
            ) from exc
        response = json_response(body)
        if self.feedback is not None:
            response.headers["X-Request-Id"] = rid
        return response, str(servable.version)

    def _log_predictions(self, name: str, version: int, parsed: Any, out: Any, runtime: Any,
                         rid: str) -> None:
        if self.feedback is None or not parsed.texts or runtime.task != "classification":
            return
        predicted = [runtime.labels[int(k)] for k in out.probabilities.argmax(axis=-1)]
        self.feedback.record_predictions(name, version, parsed.texts, predicted, rid)

    async def _feedback(self, request: Request, name: str, servable: Any) -> Response:
        """POST :feedback, a tfllm extension (not in TF Serving's API)."""
        if self.feedback is None:
            raise NotFound("feedback is off on this server (feedback.enabled in its config)")
        if servable.runtime.task != "classification":
            raise InvalidInput(f"feedback is for classification models; {name} is "
                               f"{servable.runtime.task}")
        data = decode_json(await read_body(request, self.config.limits.max_body_bytes))
        record = await asyncio.to_thread(self.feedback.add_feedback, name, servable.version,
                                         servable.runtime.labels, data)
        return json_response({"status": "recorded", **{k: record[k] for k in ("label",)},
                              **({"id": record["id"]} if "id" in record else {})})


class _MethodNotAllowed(ServingError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: bytes) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _AUTH_EXEMPT:
            await self.app(scope, receive, send)
            return
        header = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token):
            await self.app(scope, receive, send)
            return
        response = json_response({"error": "missing or invalid bearer token"}, 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class AccessLog:
    """One JSON log line per HTTP request (uvicorn's own access log is turned off)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client")
            access_log.info(
                "access",
                extra={
                    "event": "access",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                    "client": f"{client[0]}:{client[1]}" if client else "",
                },
            )


def create_app(
    manager: ModelManager,
    config: ServerConfig,
    auth_token: bytes | None = None,
    on_startup: list[Callable[[], Any]] | None = None,
    on_shutdown: list[Callable[[], Any]] | None = None,
) -> ASGIApp:
    """The ASGI app: routes, JSON error handlers, auth and access-log middleware.

    ``on_startup``/``on_shutdown`` run in the app's lifespan (start polling, gRPC, ...).
    """
    models = ModelRoutes(manager, config)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        ready, detail = manager.readiness()
        return json_response({"ready": ready, "models": detail}, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(manager.metrics.exposition(), media_type=manager.metrics.content_type)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_spec())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for hook in on_startup or []:
            await _maybe_await(hook())
        try:
            yield
        finally:
            for hook in on_shutdown or []:
                await _maybe_await(hook())

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi),
            Route("/v1/models/{rest:path}", models.handle, methods=["GET", "POST"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    wrapped: ASGIApp = app
    if auth_token is not None:
        wrapped = BearerAuth(wrapped, auth_token)
    if config.access_log:
        wrapped = AccessLog(wrapped)
    return wrapped


async def _maybe_await(value: Any) -> None:
    if isinstance(value, Awaitable):
        await value
