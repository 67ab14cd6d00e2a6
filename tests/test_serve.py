"""serve: a real uvicorn server on 127.0.0.1 (free port) + httpx; validation errors; micro-batching counters."""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from conftest import make_rows, require_chromium


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    from test_export import save_canonical_classifier

    return save_canonical_classifier(tmp_path_factory.mktemp("student"))


def _serve(app):
    """Run ``app`` with uvicorn in a background thread on a free loopback port; yields the base URL."""
    import uvicorn

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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server(student_dir):
    """(base_url, app) of a uvicorn server running in a background thread on a free loopback port."""
    from findistill.deploy.serve import create_app

    app = create_app(student_dir, max_texts=8, max_chars=200, batch_window_ms=50, max_batch=64)
    for url in _serve(app):
        yield url, app


def test_health_docs_and_predict(server, student_dir):
    from findistill.deploy.runtime import load_classifier

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
    from findistill.deploy.runtime import load_classifier

    url, _ = server
    rows = [t for t, _ in make_rows(48, 8)]
    requests = [rows[i * 3:(i + 1) * 3] for i in range(16)]
    before = httpx.get(f"{url}/health", timeout=10).json()["stats"]

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json={"texts": t}) for t in requests))

    responses = asyncio.run(go())
    after = httpx.get(f"{url}/health", timeout=10).json()["stats"]
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
    from findistill.deploy.serve import create_app

    app = create_app(student_dir, max_texts=4, batch_window_ms=30, max_batch=5)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            res = await asyncio.gather(*(client.post("/predict", json={"texts": [f"t{i}"] * 3}) for i in range(6)))
            metrics = (await client.get("/health")).json()["stats"]
            await app.state.batcher.close()
            return res, metrics

    responses, metrics = asyncio.run(go())
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 3 for r in responses)
    assert metrics["largest_batch"] <= 5 and metrics["texts"] == 18 and metrics["batches"] >= 4


def test_main_bad_model_exits_2(tmp_path, capsys):
    from findistill.deploy.serve import main

    assert main([str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_two_worker_processes_serve_one_port(student_dir, capsys):
    """`findistill serve --workers 2`: two processes, each with the model, answer on one port; bad --workers is one line."""
    from findistill.deploy.serve import main

    assert main([str(student_dir), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "findistill: error: --workers must be >= 1, got 0"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "findistill.deploy.serve", str(student_dir), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        answers = [httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": [f"Apple beats #{i}"]}, timeout=30)
                   for i in range(8)]
        assert all(r.status_code == 200 and len(r.json()["predictions"]) == 1 for r in answers)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "python" in c.name().lower()]
        assert len(workers) >= 2, workers
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------- HTTP-layer limits

FIFTY_MB = 50 * 2**20


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Status, headers and body of one HTTP/1.1 response read from a raw socket."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def test_content_length_over_the_limit_is_refused_before_reading(server):
    """A 50 MB Content-Length is answered 413 at once: the client sends the headers only and gets the answer."""
    url, app = server
    limit = app.state.limits["max_body_bytes"]
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % FIFTY_MB)
        status, headers, body = _read_response(sock)  # answered with the body never sent
    detail = json.loads(body)["detail"]
    assert status == 413 and headers.get("connection") == "close"
    assert detail == f"request body too large: Content-Length {FIFTY_MB:,} bytes > {limit:,} bytes"


def test_streamed_body_over_the_limit_is_cut_off(server):
    """A chunked body (no Content-Length) is counted as it arrives: 413 long before 50 MB are sent, then close."""
    url, app = server
    limit = app.state.limits["max_body_bytes"]
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent, pending, answered = 0, b"", False
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        while sent < FIFTY_MB and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                answered = True
                break
            if writable:
                pending = pending or frame
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                sent += n
                pending = pending[n:]
        assert answered, f"the server read {sent:,} bytes without answering"
        status, headers, body = _read_response(sock)
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(body)["detail"] == f"request body too large: more than {limit:,} bytes streamed"
    assert sent < FIFTY_MB // 5, f"{sent:,} bytes were sent before the answer"


def test_body_just_under_the_limit_is_served(server):
    url, app = server
    limit = app.state.limits["max_body_bytes"]
    body = json.dumps({"texts": ["$AAPL soars"]})
    body = body[:-1] + " " * (limit - len(body)) + "}"  # JSON whitespace up to exactly the limit
    assert len(body.encode()) == limit
    resp = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text
    resp = httpx.post(f"{url}/predict", content=body + " ", headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == 413 and "\n" not in resp.json()["detail"]


def test_request_timeout_answers_503(student_dir):
    """A request still waiting when the timeout passes (here: a 30 s batch window) gets 503 and one line."""
    from findistill.deploy.serve import create_app

    app = create_app(student_dir, batch_window_ms=30_000, request_timeout_s=0.5)
    for url in _serve(app):
        resp = httpx.post(f"{url}/predict", json={"texts": ["$AAPL soars"]}, timeout=60)
        assert resp.status_code == 503  # the batch window would have answered 200 after 30 s
        assert resp.json()["detail"] == "request timed out after 0.5 s (server busy); retry later"
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # the server itself is fine


def test_a_slow_client_is_timed_out_and_the_server_stays_responsive(student_dir):
    """A body sent one byte a second: 503 once the request timeout passes, before the body is whole; meanwhile and
    afterwards others are served."""
    from findistill.deploy.serve import create_app

    app = create_app(student_dir, request_timeout_s=2.0)
    for url in _serve(app):
        body = json.dumps({"texts": ["$AAPL soars after earnings"]}).encode()
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            start, sent, answered = time.monotonic(), 0, False
            while sent < len(body) and not answered:
                sock.sendall(body[sent:sent + 1])
                sent += 1
                assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # answered while it trickles
                answered = bool(select.select([sock], [], [], 1.0)[0])  # one byte a second
            status, _, payload = _read_response(sock)
            waited = time.monotonic() - start
        assert status == 503 and json.loads(payload)["detail"].startswith("request timed out after 2 s")
        assert sent < len(body) and waited >= 2.0, (sent, waited)  # at the timeout, before the body was whole
        ok = httpx.post(f"{url}/predict", json={"texts": ["$AAPL soars"]}, timeout=10)
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_clients_that_disconnect_mid_request_leave_the_server_serving(student_dir):
    """One client leaves in the middle of its body, another after sending a whole request but before the answer (its
    batch is still collecting); the requests around them are answered, and the server stays healthy."""
    from findistill.deploy.serve import create_app

    app = create_app(student_dir, batch_window_ms=300)
    for url in _serve(app):
        body = json.dumps({"texts": ["Tesla shares fall"]}).encode()
        head = (b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))

        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                first = asyncio.ensure_future(client.post("/predict", json={"texts": ["Apple beats estimates"]}))
                with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
                    sock.sendall(head + body[:5])  # leaves mid-body
                with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as sock:
                    sock.sendall(head + body)  # leaves before its answer
                    await asyncio.sleep(0.05)
                rest = await asyncio.gather(*(client.post("/predict", json={"texts": [f"Nomura cut to sell #{i}"]})
                                              for i in range(5)))
                return [await first, *rest]

        responses = asyncio.run(go())
        assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_200_concurrent_connections_each_get_their_own_answer(server, student_dir):
    """200 connections at once: every accepted request gets its own text's answer or a clear 503; none is lost."""
    from findistill.deploy.runtime import load_classifier

    url, _ = server
    texts = [f"{t} #{i}" for i, (t, _) in enumerate(make_rows(200, 11))]

    async def go():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in texts))

    responses = asyncio.run(go())
    expected = load_classifier(student_dir).predict_proba(texts)
    labels = ["negative", "neutral", "positive"]
    answered = 0
    for i, resp in enumerate(responses):
        assert resp.status_code in (200, 503), resp.text
        if resp.status_code == 503:
            assert resp.json()["detail"].startswith("request timed out")
            continue
        answered += 1
        probs = resp.json()["predictions"][0]["probs"]
        np.testing.assert_allclose([probs[n] for n in labels], expected[i], atol=1e-5)
    assert answered >= 190, f"only {answered} of 200 answered"


def test_metrics_speak_the_prometheus_text_format(server):
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = server

    def scrape() -> dict:
        resp = httpx.get(f"{url}/metrics", timeout=10)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=")
        out = {}
        for family in text_string_to_metric_families(resp.text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    before = scrape()
    for texts in (["a", "b"], ["c"]):
        assert httpx.post(f"{url}/predict", json={"texts": texts}, timeout=10).status_code == 200
    assert httpx.post(f"{url}/predict", json={"texts": ["a"] * 9}, timeout=10).status_code == 413
    after = scrape()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("findistill_predict_requests_total") == 2 and delta("findistill_predict_texts_total") == 3
    assert delta("findistill_batch_texts_count") == delta("findistill_batches_total") >= 1
    assert delta("findistill_http_responses_total", path="/predict", status="200") == 2
    assert delta("findistill_http_responses_total", path="/predict", status="413") == 1
    assert delta("findistill_request_seconds_count", path="/predict") == 3
    assert after[("findistill_largest_batch_texts", ())] >= 2
    health = httpx.get(f"{url}/health", timeout=10).json()  # the JSON counters stay under /health
    assert health["stats"]["texts"] >= 3 and health["limits"]["max_texts"] == 8


# --------------------------------------------------------------------------------------------- offline docs


def test_docs_page_references_only_local_assets(server):
    url, _ = server
    html = httpx.get(f"{url}/docs", timeout=10).text
    assets = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html) + re.findall(r"url: ?'([^']+)'", html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    assert "cdn." not in html
    for asset in {a for a in assets if a.endswith((".js", ".css"))}:
        resp = httpx.get(f"{url}{asset}", timeout=10)
        assert resp.status_code == 200 and len(resp.content) > 10_000, asset


@pytest.mark.slow
def test_docs_render_in_headless_chromium_without_network(server, tmp_path):
    """Swagger UI draws the /predict operation with every host name but 127.0.0.1 unresolvable (no network)."""
    chromium = require_chromium()
    url, _ = server
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=15000", "--dump-dom", f"{url}/docs"],
        capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    assert 'class="swagger-ui' in dom, (dom[-1500:], proc.stderr[-2000:])
    assert "opblock-summary-path" in dom and "/predict" in dom and "/health" in dom, dom[-3000:]
    assert "findistill" in dom


def test_try_it_page_is_self_contained_and_names_the_model(server):
    url, app = server
    resp = httpx.get(f"{url}/", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert app.state.classifier.name in page and "uncalibrated softmax" in page
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page), "no external asset"
    assert "/" not in {op for op in app.openapi()["paths"]}, "the page is not an API operation"


class _DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket (websocket-client)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})

    def value(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.mark.slow
def test_try_it_page_in_headless_chromium_type_press_read(server, tmp_path):
    """A user's path on the page: type a sentence, press the button (real key and mouse events), read the label."""
    chromium = require_chromium()
    url, _ = server
    profile = tmp_path / "profile"
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"{url}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (profile / "DevToolsActivePort").is_file() or not (profile / "DevToolsActivePort").read_text():
            assert time.monotonic() < deadline and browser.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = (profile / "DevToolsActivePort").read_text().split()[0]
        while True:
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                     if t["type"] == "page" and t["url"].startswith(url)]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        tab = _DevTools(pages[0]["webSocketDebuggerUrl"])
        while not tab.value("document.readyState === 'complete' && document.getElementById('classify') !== null"):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        def click(element_id: str) -> None:  # a left click in the middle of the element
            rect = json.loads(tab.value(f"JSON.stringify(document.getElementById('{element_id}')"
                                        ".getBoundingClientRect())"))
            x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
            for kind in ("mousePressed", "mouseReleased"):
                tab.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

        text = "Shares of $XYZ plunge after the company cuts its outlook"
        tab.call("Emulation.setFocusEmulationEnabled", enabled=True)  # a headless tab behaves as a focused one
        click("text")
        tab.call("Input.insertText", text=text)  # typed into the text box the click focused
        assert tab.value("document.getElementById('text').value") == text
        click("classify")
        label = ""
        while not label:
            assert time.monotonic() < deadline, tab.value("document.body.innerText")
            time.sleep(0.1)
            label = tab.value("document.getElementById('label').textContent")
        shown = json.loads(tab.value(
            "JSON.stringify([...document.querySelectorAll('#bars .row')].map(r => "
            "[r.dataset.label, parseFloat(r.querySelector('.p').textContent)]))"))
        api = httpx.post(f"{url}/predict", json={"texts": [text]}, timeout=30).json()["predictions"][0]
        assert label == api["label"], "the page shows what the API answers"
        assert [name for name, _ in shown] == list(api["probs"])
        assert max(shown, key=lambda item: item[1])[0] == label
        for name, p in shown:
            assert p == pytest.approx(api["probs"][name], abs=1e-3)
        assert tab.value("document.getElementById('error').textContent") == ""
    finally:
        browser.kill()
        browser.wait(timeout=30)


@pytest.mark.slow
def test_every_operation_fuzzed_from_the_openapi_schema(server, tmp_path):
    """Schemathesis against the live server's own /openapi.json, every operation and every check: no 5xx, every
    response conforms to the schema (status code, content type, body), bad input is refused and good input accepted;
    the server is healthy afterwards."""
    cli = Path(sys.executable).with_name("schemathesis")
    url, _ = server
    report, config = tmp_path / "junit.xml", tmp_path / "schemathesis.toml"
    # Bad input is refused with 400 (malformed JSON), 413 (over a documented limit) or 422 (schema), never else.
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["400", "413", "422"]\n')
    proc = subprocess.run(
        [str(cli), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "1",
         "--report", "junit", "--report-junit-path", str(report), "--no-color", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    import xml.etree.ElementTree as ET

    cases = ET.parse(report).getroot().iter("testcase")
    tested = {case.get("name"): (case.find("failure"), case.find("error")) for case in cases}
    assert set(tested) == {"POST /predict", "GET /health", "GET /metrics"}, tested  # every operation of the schema
    assert all(failure is None and error is None for failure, error in tested.values())
    health = httpx.get(f"{url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ok = httpx.post(f"{url}/predict", json={"texts": ["Apple beats estimates"]}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
