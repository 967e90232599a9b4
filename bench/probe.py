"""One-connection probes in plain Python: correctness checks before timing,
and time-to-first-event of streams (which wrk, timing whole replies, cannot see).

The probe runs on the load generator's core; its own overhead (http.client
parsing, ~tens of µs) is the same for every system, so differences to the
direct row are the proxy's.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from bench import payloads


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class StreamTiming:
    samples: int
    headers_p50_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), parts.path


def _headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {payloads.BENCH_KEY}",
            "Content-Length": str(len(body))}


def post(url: str, body: bytes, timeout: float = 30.0) -> Reply:
    connection, path = _connection(url, timeout)
    try:
        connection.request("POST", path, body=body, headers=_headers(body))
        response = connection.getresponse()
        return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines).decode())
    return out


def check_json(url: str) -> dict:
    """The proxy must hand back the upstream's reply (same JSON; bytes may be re-serialised)."""
    reply = post(url, payloads.chat_request(stream=False))
    expected = json.loads(payloads.chat_completion())
    ok = reply.status == 200 and _json_or_none(reply.body) == expected
    return {"ok": ok, "status": reply.status, "byte_identical": reply.body == payloads.chat_completion(),
            "detail": "" if ok else reply.body[:300].decode(errors="replace")}


def check_stream(url: str) -> dict:
    """The upstream's events, unaltered and in order, ending in ``[DONE]`` (framing bytes may differ)."""
    reply = post(url, payloads.chat_request(stream=True))
    events = sse_data(reply.body)
    expected = sse_data(payloads.chat_stream())
    text = "".join(
        choice.get("delta", {}).get("content") or ""
        for event in events if event != "[DONE]"
        for choice in (_json_or_none(event.encode()) or {}).get("choices", [])
    )
    ok = (reply.status == 200 and events[-1:] == ["[DONE]"] and text == payloads.stream_text()
          and [_json_or_none(e.encode()) for e in events] == [_json_or_none(e.encode()) for e in expected])
    return {"ok": ok, "status": reply.status, "events": len(events), "expected_events": len(expected),
            "byte_identical": reply.body == payloads.chat_stream(),
            "detail": "" if ok else reply.body[:300].decode(errors="replace")}


def check_block(url: str, *, stream: bool) -> dict:
    """A prompt carrying ``capsem_block`` must be refused before it reaches the upstream.

    capsem-proxyd answers 400 (a final refusal, see its README), capsem-proxy 0.1.0 403: either is a refusal here.
    """
    reply = post(url, payloads.chat_request(stream=stream, prompt=f"please {payloads.BLOCK_MARKER} this"))
    ok = reply.status in (400, 403)
    return {"ok": ok, "status": reply.status, "detail": reply.body[:300].decode(errors="replace")}


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def stream_timing(url: str, samples: int, timeout: float = 30.0) -> StreamTiming:
    """Sequential streams on one keep-alive connection: time to headers, to the
    first ``data:`` event and to the end of the body, from the request's first byte."""
    body = payloads.chat_request(stream=True)
    headers = _headers(body)
    connection, path = _connection(url, timeout)
    heads: list[float] = []
    firsts: list[float] = []
    totals: list[float] = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            heads.append(time.perf_counter() - started)
            seen = b""
            while b"data:" not in seen:
                piece = response.read1(65536)
                if not piece:
                    raise RuntimeError(f"stream from {url} ended before its first event (status {response.status})")
                seen += piece
            firsts.append(time.perf_counter() - started)
            response.read()
            totals.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"stream from {url} answered {response.status}")
    finally:
        connection.close()
    return StreamTiming(
        samples=samples,
        headers_p50_ms=_ms(statistics.median(heads)),
        ttfb_p50_ms=_ms(statistics.median(firsts)),
        ttfb_p99_ms=_ms(_percentile(firsts, 99)),
        total_p50_ms=_ms(statistics.median(totals)),
        total_p99_ms=_ms(_percentile(totals, 99)),
    )


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
