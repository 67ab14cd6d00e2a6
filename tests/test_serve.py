"""serve: a real uvicorn server on 127.0.0.1 (free port) + httpx; validation errors; micro-batching counters."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import make_rows


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    from test_export import save_canonical_classifier

    return save_canonical_classifier(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def server(student_dir):
    """(base_url, app) of a uvicorn server running in a background thread on a free loopback port."""
    import uvicorn

    from findistill.serve import create_app

    app = create_app(student_dir, max_texts=8, max_chars=200, batch_window_ms=50, max_batch=64)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_health_docs_and_predict(server, student_dir):
    from findistill.runtime import load_classifier

    url, _ = server
    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["labels"] == ["negative", "neutral", "positive"]
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
    assert "/predict" in httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    texts = ["$AAPL soars on strong earnings", "Cemex files quarterly report", ""]
    resp = httpx.post(f"{url}/predict", json={"texts": texts}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == health["model"] and len(body["predictions"]) == 3
    expected = load_classifier(student_dir).predict_proba(texts)
    for pred, probs in zip(body["predictions"], expected):
        assert pred["label"] == health["labels"][int(probs.argmax())]
        np.testing.assert_allclose([pred["probs"][n] for n in health["labels"]], probs, atol=1e-5)


@pytest.mark.parametrize("body, status, needle", [
    ({"texts": []}, 422, "at least 1"),
    ({"texts": ["a"] * 9}, 413, "too many texts"),
    ({"texts": ["ok", "x" * 201]}, 413, "texts.1: 201 characters"),
    ({"texts": ["ok", 3]}, 422, "texts.1"),
    ({"text": ["ok"]}, 422, "texts: Field required"),
    ({"texts": "just a string"}, 422, "texts"),
    ("{not json", 400, "malformed JSON"),
    ("", 422, "body"),
])
def test_bad_requests(server, body, status, needle):
    url, _ = server
    if isinstance(body, str):
        resp = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=10)
    else:
        resp = httpx.post(f"{url}/predict", json=body, timeout=10)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and needle in detail and "\n" not in detail


def test_concurrent_requests_are_batched(server, student_dir):
    from findistill.runtime import load_classifier

    url, _ = server
    rows = [t for t, _ in make_rows(48, 8)]
    requests = [rows[i * 3:(i + 1) * 3] for i in range(16)]
    before = httpx.get(f"{url}/metrics", timeout=10).json()

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json={"texts": t}) for t in requests))

    responses = asyncio.run(go())
    after = httpx.get(f"{url}/metrics", timeout=10).json()
    expected = load_classifier(student_dir).predict_proba(rows)
    labels = ["negative", "neutral", "positive"]
    for i, resp in enumerate(responses):
        assert resp.status_code == 200, resp.text
        preds = resp.json()["predictions"]
        assert len(preds) == 3
        for j, pred in enumerate(preds):
            np.testing.assert_allclose([pred["probs"][n] for n in labels], expected[i * 3 + j], atol=1e-5)
    assert after["requests"] - before["requests"] == 16 and after["texts"] - before["texts"] == 48
    assert after["batches"] - before["batches"] < 16
    assert after["largest_batch"] > 3


def test_asgi_transport_and_batch_cap(student_dir):
    """Without a server: the app also works in-process; a batch never exceeds max_batch texts."""
    from findistill.serve import create_app

    app = create_app(student_dir, max_texts=4, batch_window_ms=30, max_batch=5)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            res = await asyncio.gather(*(client.post("/predict", json={"texts": [f"t{i}"] * 3}) for i in range(6)))
            metrics = (await client.get("/metrics")).json()
            await app.state.batcher.close()
            return res, metrics

    responses, metrics = asyncio.run(go())
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 3 for r in responses)
    assert metrics["largest_batch"] <= 5 and metrics["texts"] == 18 and metrics["batches"] >= 4


def test_main_bad_model_exits_2(tmp_path, capsys):
    from findistill.serve import main

    assert main([str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err
