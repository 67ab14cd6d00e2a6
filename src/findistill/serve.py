"""``findistill serve``: an HTTP classifier (FastAPI + uvicorn) with micro-batching.

* ``POST /predict`` ``{"texts": [...]}`` → ``{"predictions": [{"label", "probs"}], "model": name}``;
* ``GET /health`` → ``{"status": "ok", "model", "variant", "labels", "stats"}``; ``GET /metrics`` → the counters;
* OpenAPI docs at ``/docs``.

Errors: malformed JSON → 400; a missing ``texts``, an empty list or a non-string → 422; too many texts or a text
over ``max_chars`` → 413. Every error body has a one-line ``detail``.

Micro-batching: requests are queued; one worker task takes the first, keeps collecting for ``batch_window_ms``
or until ``max_batch`` texts, runs them as ONE batch in a worker thread (the event loop stays free) and hands
each request its slice. The counters (requests, batches, texts, largest batch) show how well requests merged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from findistill.runtime import Classifier, load_classifier


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify, in order.")


class Prediction(BaseModel):
    label: str
    probs: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: str


class MicroBatcher:
    """Collects concurrent requests into batches of at most ``max_batch`` texts; one batch runs at a time."""

    def __init__(self, classifier: Classifier, batch_window_ms: float = 5.0, max_batch: int = 64):
        self.classifier = classifier
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
            self.stats["inference_seconds"] += time.perf_counter() - start
            self.stats["batches"] += 1
            self.stats["requests"] += len(items)
            self.stats["texts"] += len(texts)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
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


def _validation_detail(errors: Sequence[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(model_dir: str | Path | Classifier, max_texts: int = 64, max_chars: int = 1000,
               batch_window_ms: float = 5.0, max_batch: int = 64) -> FastAPI:
    """The FastAPI app serving ``model_dir`` (any variant, or an already loaded :class:`Classifier`)."""
    classifier = model_dir if isinstance(model_dir, Classifier) else load_classifier(model_dir)
    batcher = MicroBatcher(classifier, batch_window_ms, max_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="findistill", version="0.1.0", lifespan=lifespan,
                  description=f"Financial-sentiment classifier `{classifier.name}` ({', '.join(classifier.labels)}).")
    app.state.classifier = classifier
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            msg = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return JSONResponse(status_code=400, content={"detail": f"malformed JSON body{': ' + msg if msg else ''}"})
        return JSONResponse(status_code=422, content={"detail": _validation_detail(errors),
                                                      "errors": jsonable_encoder(errors)})

    @app.post("/predict", response_model=PredictResponse,
              responses={400: {"description": "malformed JSON"}, 413: {"description": "too many or too long texts"},
                         422: {"description": "invalid request body"}})
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
            raise HTTPException(500, f"inference failed: {type(err).__name__}: {str(err).splitlines()[0]}") from None
        return {"predictions": predictions, "model": classifier.name}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": classifier.name, "variant": classifier.variant,
                "labels": classifier.labels, "stats": dict(batcher.stats)}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {**batcher.stats, "max_batch": batcher.max_batch, "batch_window_ms": batcher.window * 1000,
                "max_texts": max_texts, "max_chars": max_chars}

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
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from findistill.errors import FindistillError

    args = build_parser().parse_args(argv)
    try:
        app = create_app(args.model, args.max_texts, args.max_chars, args.batch_window_ms, args.max_batch)
    except FindistillError as err:
        print(f"findistill: error: {err}", file=sys.stderr)
        return 2
    print(f"serving {app.state.classifier.name} on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
