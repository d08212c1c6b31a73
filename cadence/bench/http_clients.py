"""The serve bench's clients: one request through the OpenAI Python client or plain httpx, timed from the send to
its first audio bytes and to its last."""

from __future__ import annotations

import time

import httpx


async def one_httpx(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One request: its status, time to first bytes and latency (audio seconds come from the server's counter)."""
    t0 = time.perf_counter()
    ttfa, n = None, 0
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return {"status": r.status_code}
            async for data in r.aiter_bytes():
                if data and ttfa is None:
                    ttfa = time.perf_counter() - t0
                n += len(data)
    except httpx.HTTPError as exc:
        return {"status": type(exc).__name__}
    return {"status": 200, "ttfa_s": ttfa or 0.0, "latency_s": time.perf_counter() - t0, "bytes": n}


async def one_openai(client, body: dict) -> dict:
    """One request through the OpenAI client (`audio.speech.with_streaming_response`); Cadence's own fields
    (seed, max_new_tokens, stream, language) go as `extra_body`, as a user of that client sends them."""
    import openai  # noqa: PLC0415 - only this client needs it
    t0 = time.perf_counter()
    ttfa, n = None, 0
    extra = {k: body[k] for k in ("seed", "max_new_tokens", "stream", "language") if k in body}
    try:
        async with client.audio.speech.with_streaming_response.create(
                model=body["model"], voice=body["voice"], input=body["input"],
                response_format=body["response_format"], extra_body=extra) as r:
            async for data in r.iter_bytes():
                if data and ttfa is None:
                    ttfa = time.perf_counter() - t0
                n += len(data)
    except openai.APIStatusError as exc:
        return {"status": exc.status_code}
    except openai.APIError as exc:
        return {"status": type(exc).__name__}
    return {"status": 200, "ttfa_s": ttfa or 0.0, "latency_s": time.perf_counter() - t0, "bytes": n}


def level_client(base: str, kind: str, concurrency: int):
    """The level's one client: OpenAI's (over its own httpx pool, sized to the level) or plain httpx."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    if kind == "openai":
        import openai  # noqa: PLC0415
        return openai.AsyncOpenAI(base_url=base + "/v1", api_key="cadence-bench", max_retries=0, timeout=600,
                                  http_client=httpx.AsyncClient(limits=limits, timeout=600))
    if kind != "httpx":
        raise ValueError(f"client must be openai or httpx, got {kind!r}")
    return httpx.AsyncClient(timeout=600, limits=limits)
