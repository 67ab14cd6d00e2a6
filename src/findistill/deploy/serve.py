"""``findistill serve``: an HTTP classifier (FastAPI + uvicorn) with micro-batching.

* ``POST /predict`` ``{"texts": [...]}`` → ``{"predictions": [{"label", "probs"}], "model": name}``;
* ``GET /`` → a self-contained page to try the model (a text box, a button, a bar per label; no external asset);
* ``GET /health`` → ``{"status": "ok", "model", "variant", "labels", "stats", "limits"}`` (JSON counters);
* ``GET /metrics`` → the same counters and latency histograms in the Prometheus text format (``prometheus_client``);
* OpenAPI docs at ``/docs`` (Swagger UI) and ``/redoc``, served from local files (``fastapi-offline``), so they
  render on a machine without network.

Errors: malformed JSON → 400; a missing ``texts``, an empty list or a non-string → 422; too many texts or a text
over ``max_chars`` → 413. Every error body has a one-line ``detail``.

Limits at the HTTP layer (:class:`LimitsMiddleware`, before FastAPI reads or parses anything): a body whose
``Content-Length`` is over ``max_body_bytes`` is answered 413 without reading it; a body without one (chunked) is
counted as it streams in and answered 413 as soon as it passes the limit, so memory stays bounded; a request whose
response has not started within ``request_timeout_s`` (reading, queueing and inference together) is answered 503.

Micro-batching: requests are queued; one worker task takes the first, keeps collecting for ``batch_window_ms``
or until ``max_batch`` texts, runs them as ONE batch in a worker thread (the event loop stays free) and hands
each request its slice. The counters (requests, batches, texts, largest batch) show how well requests merged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from findistill.errors import FindistillError, first_line
from findistill.deploy.runtime import Classifier, load_classifier


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify, in order.")


class LabelScores(BaseModel):
    """One text's answer: the top label and the probability of every label."""
    label: str
    probs: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[LabelScores]
    model: str


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (one per app, so several apps can coexist)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("findistill_predict_requests", "Requests answered by the micro-batcher", registry=r)
        self.texts = Counter("findistill_predict_texts", "Texts classified", registry=r)
        self.batches = Counter("findistill_batches", "Inference batches run", registry=r)
        self.batch_texts = Histogram("findistill_batch_texts", "Texts per inference batch", registry=r,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.inference = Histogram("findistill_inference_seconds", "Wall time of one inference batch", registry=r)
        self.latency = Histogram("findistill_request_seconds", "Wall time of one HTTP request, by path", ["path"],
                                 registry=r)
        self.responses = Counter("findistill_http_responses", "HTTP responses by path and status code",
                                 ["path", "status"], registry=r)
        self.largest_batch = Gauge("findistill_largest_batch_texts", "Largest batch run so far", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MicroBatcher:
    """Collects concurrent requests into batches of at most ``max_batch`` texts; one batch runs at a time."""

    def __init__(self, classifier: Classifier, batch_window_ms: float = 5.0, max_batch: int = 64,
                 metrics: Metrics | None = None):
        self.classifier = classifier
        self.metrics = metrics
        self.window = max(0.0, batch_window_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self.stats: dict[str, Any] = {"requests": 0, "batches": 0, "texts": 0, "largest_batch": 0,
                                      "inference_seconds": 0.0}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._carry: tuple[list[str], asyncio.Future] | None = None

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._queue

    async def submit(self, texts: list[str]) -> list[dict[str, Any]]:
        queue = self._ensure_worker()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await queue.put((texts, future))
        return await future

    async def _collect(self) -> list[tuple[list[str], asyncio.Future]]:
        assert self._queue is not None
        first = self._carry or await self._queue.get()
        self._carry = None
        items, size = [first], len(first[0])
        deadline = time.monotonic() + self.window
        while size < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(item[0]) > self.max_batch:
                self._carry = item  # it starts the next batch
                break
            items.append(item)
            size += len(item[0])
        return items

    async def _run(self) -> None:
        while True:
            items = await self._collect()
            items = [(texts, fut) for texts, fut in items if not fut.done()]  # drop cancelled clients
            if not items:
                continue
            texts = [t for chunk, _ in items for t in chunk]
            start = time.perf_counter()
            try:
                probs = await asyncio.to_thread(self.classifier.predict_proba, texts, self.max_batch)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            seconds = time.perf_counter() - start
            self.stats["inference_seconds"] += seconds
            self.stats["batches"] += 1
            self.stats["requests"] += len(items)
            self.stats["texts"] += len(texts)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
            if self.metrics is not None:
                m = self.metrics
                m.inference.observe(seconds)
                m.batches.inc()
                m.requests.inc(len(items))
                m.texts.inc(len(texts))
                m.batch_texts.observe(len(texts))
                m.largest_batch.set(self.stats["largest_batch"])
            predictions = self.classifier.to_predictions(probs)
            offset = 0
            for chunk, fut in items:
                if not fut.done():
                    fut.set_result(predictions[offset:offset + len(chunk)])
                offset += len(chunk)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def default_max_body_bytes(max_texts: int, max_chars: int) -> int:
    """Room for ``max_texts`` texts of ``max_chars`` characters each written as ``\\uXXXX`` escapes, plus JSON."""
    return max(64 * 1024, max_texts * (6 * max_chars + 8) + 1024)


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Pure ASGI middleware: body-size limit (Content-Length first, then the streamed bytes) and a per-request
    timeout, enforced before the app reads or parses a body; every response is counted in ``metrics``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, request_timeout_s: float | None,
                 metrics: Metrics | None = None):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.timeout = request_timeout_s if request_timeout_s and request_timeout_s > 0 else None
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        path_label = path if path in ("/", "/predict", "/health", "/metrics", "/docs", "/openapi.json") else "other"
        started_at = time.perf_counter()
        status: list[int] = []

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self._limited(scope, receive, send_counted)
        finally:
            if self.metrics is not None and status:
                self.metrics.responses.labels(path_label, str(status[0])).inc()
                self.metrics.latency.labels(path_label).observe(time.perf_counter() - started_at)

    async def _limited(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        limit = self.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, f"invalid Content-Length header: {length[:40].decode(errors='replace')!r}")
                return
            if declared > limit:  # refused before a single body byte is read
                await _send_json(send, 413, f"request body too large: Content-Length {declared:,} bytes > "
                                            f"{limit:,} bytes")
                return
        received = 0
        over = False

        async def counted_receive() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI re-raises an HTTPException met while reading the body
                    over = True
                    raise HTTPException(413, f"request body too large: more than {limit:,} bytes streamed")
            return message

        started = asyncio.Event()

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.set()
                if over:  # the rest of the body is never read: close the connection after this answer
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        # The timeout bounds the time to the response's start (reading the body, queueing, inference); a response
        # that has started (a large static file to a slow client) is not cut off.
        task = asyncio.ensure_future(self.app(scope, counted_receive, tracked_send))
        try:
            if self.timeout is not None:
                waiter = asyncio.ensure_future(started.wait())
                done, _ = await asyncio.wait({task, waiter}, timeout=self.timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not done and not started.is_set():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    if not started.is_set():  # nothing was sent while it was being cancelled
                        await _send_json(send, 503, f"request timed out after {self.timeout:g} s (server busy); "
                                                    "retry later")
                    return
            await task
        except HTTPException as err:  # raised outside FastAPI's own handling (e.g. by a non-route path)
            if started.is_set():
                raise
            await _send_json(send, err.status_code, str(err.detail))
        finally:
            if not task.done():  # the client went away: stop the work done for it
                task.cancel()


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>findistill: __NAME__</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.3rem; margin-bottom: .2rem; } .meta { color: #5b6475; font-size: .9rem; margin-top: 0; }
textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .5rem; min-height: 5.5rem; }
button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; cursor: pointer; }
#label { font-size: 1.2rem; font-weight: 600; margin: 1rem 0 .4rem; min-height: 1.5rem; }
.row { display: grid; grid-template-columns: 6rem 1fr 3.5rem; gap: .6rem; align-items: center; margin: .25rem 0; }
.bar { background: #e7eaf0; height: .9rem; border-radius: .2rem; overflow: hidden; }
.bar > div { background: #3a6fd8; height: 100%; width: 0; } .p { text-align: right; font-variant-numeric: tabular-nums; }
#error { color: #b3261e; }
</style></head><body>
<h1>Financial sentiment: try it</h1>
<p class="meta">Model <code>__NAME__</code> (__VARIANT__) · labels __LABELS__ · __CALIBRATION__</p>
<label for="text">Text</label>
<textarea id="text" placeholder="Shares of $XYZ plunge after the company cuts its outlook"></textarea>
<button id="classify" type="button">Classify</button>
<div id="label" aria-live="polite"></div><div id="bars"></div><p id="error"></p>
<script>
const button = document.getElementById("classify");
async function classify() {
  const text = document.getElementById("text").value.trim();
  const error = document.getElementById("error");
  error.textContent = "";
  if (!text) { error.textContent = "Type a text first."; return; }
  button.disabled = true;
  try {
    const response = await fetch("/predict", {method: "POST", headers: {"content-type": "application/json"},
                                               body: JSON.stringify({texts: [text]})});
    const body = await response.json();
    if (!response.ok) { error.textContent = body.detail || ("HTTP " + response.status); return; }
    const prediction = body.predictions[0];
    document.getElementById("label").textContent = prediction.label;
    const bars = document.getElementById("bars");
    bars.replaceChildren();
    for (const [name, p] of Object.entries(prediction.probs)) {
      const row = document.createElement("div"); row.className = "row"; row.dataset.label = name;
      const bar = document.createElement("div"); bar.className = "bar";
      const fill = document.createElement("div"); fill.style.width = (100 * p).toFixed(1) + "%"; bar.append(fill);
      const value = document.createElement("span"); value.className = "p"; value.textContent = p.toFixed(3);
      const label = document.createElement("span"); label.textContent = name;
      row.append(label, bar, value); bars.append(row);
    }
  } catch (err) { error.textContent = String(err); } finally { button.disabled = false; }
}
button.addEventListener("click", classify);
document.getElementById("text").addEventListener("keydown", e => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(); });
</script></body></html>
"""


def try_it_page(classifier: Classifier) -> str:
    """The self-contained page of ``GET /`` (no external asset): model name, variant, labels and calibration."""
    import html

    calibration = (f"probabilities calibrated with temperature {classifier.temperature:.3f} (fitted on dev)"
                   if classifier.temperature != 1.0 else "uncalibrated softmax probabilities")
    values = {"__NAME__": classifier.name, "__VARIANT__": classifier.variant,
              "__LABELS__": ", ".join(classifier.labels), "__CALIBRATION__": calibration}
    page = _PAGE
    for key, value in values.items():
        page = page.replace(key, html.escape(value))
    return page


def _validation_detail(errors: Sequence[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(model_dir: str | Path | Classifier, max_texts: int = 64, max_chars: int = 1000,
               batch_window_ms: float = 5.0, max_batch: int = 64, *, max_body_bytes: int | None = None,
               request_timeout_s: float | None = 30.0, threads: int | None = None) -> FastAPI:
    """The FastAPI app serving ``model_dir`` (any variant, or an already loaded :class:`Classifier`).

    ``max_body_bytes`` (default :func:`default_max_body_bytes`) and ``request_timeout_s`` (None or 0: no timeout)
    are enforced by :class:`LimitsMiddleware` around the whole app. ``threads``: the classifier's cores (default all).
    """
    classifier = model_dir if isinstance(model_dir, Classifier) else load_classifier(model_dir, threads=threads)
    metrics = Metrics()
    batcher = MicroBatcher(classifier, batch_window_ms, max_batch, metrics)
    body_limit = default_max_body_bytes(max_texts, max_chars) if max_body_bytes is None else int(max_body_bytes)
    limits = {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": body_limit,
              "request_timeout_s": request_timeout_s, "max_batch": batcher.max_batch,
              "batch_window_ms": batcher.window * 1000}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc load Swagger UI / ReDoc from files shipped in the package.
    app = FastAPIOffline(title="findistill", version="0.1.0", lifespan=lifespan,
                         description=f"Financial-sentiment classifier `{classifier.name}` "
                                     f"({', '.join(classifier.labels)}).")
    app.state.classifier = classifier
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.limits = limits
    app.add_middleware(LimitsMiddleware, max_body_bytes=body_limit, request_timeout_s=request_timeout_s,
                       metrics=metrics)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The schema with this server's limits on ``texts`` (413 beyond them), so clients and fuzzers see them."""
        schema = generate_openapi()
        texts = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
        texts["maxItems"], texts["items"]["maxLength"] = max_texts, max_chars
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            msg = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return JSONResponse(status_code=400, content={"detail": f"malformed JSON body{': ' + msg if msg else ''}"})
        return JSONResponse(status_code=422, content={"detail": _validation_detail(errors),
                                                      "errors": jsonable_encoder(errors)})

    @app.post("/predict", response_model=PredictResponse,
              responses={400: {"description": "malformed JSON"},
                         413: {"description": "body too large, too many or too long texts"},
                         422: {"description": "invalid request body"},
                         503: {"description": "request timed out (server busy)"}})
    async def predict(request: PredictRequest) -> dict[str, Any]:
        """Classify ``texts``; predictions come back in the same order."""
        if len(request.texts) > max_texts:
            raise HTTPException(413, f"too many texts: {len(request.texts)} > {max_texts} per request")
        for i, text in enumerate(request.texts):
            if len(text) > max_chars:
                raise HTTPException(413, f"texts.{i}: {len(text)} characters > {max_chars}")
        try:
            predictions = await batcher.submit(list(request.texts))
        except Exception as err:  # noqa: BLE001
            raise HTTPException(500, f"inference failed: {first_line(err, with_type=True)}") from None
        return {"predictions": predictions, "model": classifier.name}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """A page to try the model: a text box, a button, each label's probability as a bar."""
        return HTMLResponse(try_it_page(classifier))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the micro-batcher's counters as JSON (requests, batches, texts, largest batch)."""
        return {"status": "ok", "model": classifier.name, "variant": classifier.variant,
                "labels": classifier.labels, "stats": dict(batcher.stats), "limits": limits}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def prometheus_metrics() -> Response:
        """Counters and histograms in the Prometheus text exposition format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="findistill serve", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a student folder or an exported variant folder (torch-int8, onnx, onnx-int8)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-texts", type=int, default=64, help="most texts per request (413 above)")
    p.add_argument("--max-chars", type=int, default=1000, help="most characters per text (413 above)")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-batch", type=int, default=64, help="most texts per inference batch")
    p.add_argument("--max-body-bytes", type=int, default=None,
                   help="largest request body (413 above, checked on Content-Length and on the streamed bytes; "
                        "default: room for --max-texts texts of --max-chars characters)")
    p.add_argument("--request-timeout-s", type=float, default=30.0,
                   help="answer 503 when a response has not started within this time (reading + queueing + "
                        "inference); 0: no timeout")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes on one port, each with the model and cores / workers threads (default 1)")
    p.add_argument("--log-level", default="warning")
    return p


_ARGS_ENV = "FINDISTILL_SERVE_ARGS"


def _app_from_args(args: argparse.Namespace):
    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else None
    return create_app(args.model, args.max_texts, args.max_chars, args.batch_window_ms, args.max_batch,
                      max_body_bytes=args.max_body_bytes, request_timeout_s=args.request_timeout_s, threads=threads)


def worker_app():
    """The app of one ``--workers`` process (uvicorn imports it as a factory; the arguments come in the environment)."""
    return _app_from_args(argparse.Namespace(**json.loads(os.environ[_ARGS_ENV])))


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print(f"findistill: error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        app = _app_from_args(args)  # loaded here too, so that a bad model is one line before any worker starts
    except FindistillError as err:
        print(f"findistill: error: {err}", file=sys.stderr)
        return 2
    print(f"serving {app.state.classifier.name} on http://{args.host}:{args.port} (docs at /docs"
          + (f"; {args.workers} worker processes" if args.workers > 1 else "") + ")", file=sys.stderr)
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    del app
    os.environ[_ARGS_ENV] = json.dumps(vars(args))
    uvicorn.run("findistill.deploy.serve:worker_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
