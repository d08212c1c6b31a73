"""`cadence bench soak`: a bounded soak of `cadence serve` on loopback.

Phase 1: C clients send streamed requests back to back for `seconds`; every failure is counted, and the
server's memory (process RSS, and CUDA allocated from /metrics) is sampled each few seconds: it must stay flat.
Phase 2, a cancellation storm: clients drop their connections mid-stream; afterwards the engine must hold no
running or waiting request (no leaked slots) and still serve."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time

import httpx

from .offline import write_report
from .http_clients import one_httpx
from .serve import read_metrics, start_server, wait_idle


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _vram_mb(base: str) -> float:
    return read_metrics(base).get("cadence_vram_allocated_bytes", 0.0) / 2 ** 20


async def _soak(base: str, pid: int, clients: int, seconds: float, max_tokens: int) -> dict:
    stop = time.perf_counter() + seconds
    results, memory = [], []
    rnd = random.Random(0)

    async def client(k):
        async with httpx.AsyncClient(timeout=300) as c:
            i = 0
            while time.perf_counter() < stop:
                body = {"input": f"Soak request {k}-{i}, short and steady.", "response_format": "pcm",
                        "seed": 1000 * k + i, "max_new_tokens": rnd.randint(20, max_tokens)}
                results.append(await one_httpx(c, base + "/v1/audio/speech", body))
                i += 1

    async def sampler():
        while time.perf_counter() < stop:
            memory.append({"t": seconds - (stop - time.perf_counter()), "rss_mb": _rss_mb(pid),
                           "vram_mb": await asyncio.to_thread(_vram_mb, base)})
            await asyncio.sleep(max(1.0, seconds / 60))

    await asyncio.gather(sampler(), *(client(k) for k in range(clients)))
    ok = sum(r["status"] == 200 for r in results)
    return {"requests": len(results), "ok": ok, "failed": len(results) - ok, "memory": memory}


async def _storm(base: str, n: int) -> None:
    async def drop(k):
        async with httpx.AsyncClient(timeout=30) as c:
            try:
                async with c.stream("POST", base + "/v1/audio/speech",
                                    json={"input": f"Dropped request {k}.", "response_format": "pcm",
                                          "max_new_tokens": 400, "seed": k}) as r:
                    async for _ in r.aiter_bytes():
                        break  # hang up at the first audio
            except httpx.HTTPError:
                pass

    async def early(k):  # hang up before any audio
        async with httpx.AsyncClient(timeout=0.05) as c:
            try:
                await c.post(base + "/v1/audio/speech", json={"input": f"Early drop {k}.", "max_new_tokens": 400})
            except httpx.HTTPError:
                pass

    await asyncio.gather(*(drop(k) for k in range(n)), *(early(k) for k in range(n)))


def run_soak(model: str, device: str, clients: int = 16, seconds: float = 600, max_tokens: int = 150,
             storm: int = 32, out_json: str | None = None) -> dict:
    server, base = start_server(model, device)
    res: dict = {}
    try:
        res = {"clients": clients, "seconds": seconds, **asyncio.run(_soak(base, server.pid, clients, seconds,
                                                                          max_tokens))}
        mem = res["memory"]
        half = mem[len(mem) // 2:] or mem
        res["rss_growth_second_half_mb"] = max(m["rss_mb"] for m in half) - min(m["rss_mb"] for m in half)
        res["vram_growth_second_half_mb"] = max(m["vram_mb"] for m in half) - min(m["vram_mb"] for m in half)
        asyncio.run(_storm(base, storm))
        res["after_storm"] = wait_idle(base, 120, poll=0.5)
        after = asyncio.run(one_httpx(httpx.AsyncClient(timeout=120), base + "/v1/audio/speech",
                                 {"input": "Still serving?", "response_format": "pcm", "max_new_tokens": 30}))
        res["served_after_storm"] = after["status"] == 200
    finally:
        server.terminate()  # a graceful shutdown: the server drains what it still holds
        t = time.perf_counter()
        try:
            server.wait(60)
            res["shutdown_s"] = round(time.perf_counter() - t, 2)
        except subprocess.TimeoutExpired:
            server.kill()
            res["shutdown_s"] = None  # reported, not hidden: it did not exit within 60 s
    print(json.dumps({k: v for k, v in res.items() if k != "memory"}, indent=1))
    write_report(res, None, out_json, None)
    return res
