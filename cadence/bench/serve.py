"""`cadence bench serve`: HTTP load on a `cadence serve` started in a separate process.

For each concurrency level, C clients each send requests back to back until the level's request count is
reached, through the real OpenAI Python client (`client="openai"`, its streaming-response form) or plain httpx;
reported: time to first audio and total latency p50/p99, aggregate audio seconds per wall second, and errors by
status."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

from ..server.startup import describe
from .http_clients import level_client, one_httpx, one_openai
from .offline import LONG_TEXT, write_report
from .serve_ray import interleaved_rounds, summarize
from .serve_ray import markdown as ray_markdown


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _progress(base: str, results: list, every: float = 15.0) -> None:
    """A line every `every` seconds while a level runs: requests done, the engine's load and counters."""
    t0 = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        try:
            health = (await asyncio.to_thread(httpx.get, base + "/health", timeout=5)).json()
            counters = await asyncio.to_thread(engine_counters, base)
        except httpx.HTTPError as exc:
            health, counters = {"error": type(exc).__name__}, {}
        print(json.dumps({"t_s": round(time.perf_counter() - t0, 1), "done": len(results),
                          **{k: health.get(k) for k in ("running", "waiting", "error")}, **counters}), flush=True)


def level_bodies(n_requests: int, seed: int, max_tokens: int, stream: bool, fmt: str,
                 request_tokens: int | None = None) -> list[dict]:
    """A level's request bodies: texts and token counts drawn from `seed` (the engine-only run replays them);
    `request_tokens` gives every request that many tokens instead of 75..`max_tokens`."""
    rnd = random.Random(seed)
    return [{"model": "tts-1", "input": LONG_TEXT[: rnd.randint(60, len(LONG_TEXT))], "voice": "default",
             "response_format": fmt, "seed": seed + i, "language": "en",
             "max_new_tokens": request_tokens or rnd.randint(min(75, max_tokens), max_tokens),
             "stream": stream} for i in range(n_requests)]


async def _level(base: str, concurrency: int, n_requests: int, seed: int, max_tokens: int, stream: bool = True,
                 timeout_s: float | None = None, fmt: str = "pcm", client_kind: str = "httpx",
                 request_tokens: int | None = None) -> dict:
    bodies = level_bodies(n_requests, seed, max_tokens, stream, fmt, request_tokens)
    before = read_metrics(base).get("cadence_audio_seconds_total", 0.0)
    results: list[dict] = []
    queue = list(reversed(bodies))

    async def worker(client):
        while queue:
            body = queue.pop()
            results.append(await (one_openai(client, body) if client_kind == "openai" else
                                  one_httpx(client, base + "/v1/audio/speech", body)))

    t0 = time.perf_counter()
    timed_out = False
    progress = asyncio.create_task(_progress(base, results))
    async with level_client(base, client_kind, concurrency) as client:
        try:
            await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(concurrency))), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
    progress.cancel()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    errors: dict = {}
    for r in results:
        if r["status"] != 200:
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1

    def pct(key, q):
        return float(np.percentile([r[key] for r in ok], q)) if ok else 0.0

    audio = read_metrics(base).get("cadence_audio_seconds_total", 0.0) - before  # what the server produced
    return {"concurrency": concurrency, "stream": stream, "format": fmt, "requests": n_requests, "ok": len(ok),
            "errors": errors,
            "timed_out": timed_out, "wall_s": wall,
            "audio_s": audio, "x_realtime": audio / wall, "ttfa_p50_s": pct("ttfa_s", 50),
            "ttfa_p99_s": pct("ttfa_s", 99), "latency_p50_s": pct("latency_s", 50),
            "latency_p99_s": pct("latency_s", 99)}


def read_metrics(base: str) -> dict[str, float]:
    """The server's /metrics as {series (name with its labels, as printed): value}."""
    out = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def engine_counters(base: str) -> dict:
    """The engine's busy seconds per stage and its decode steps (and requests in them) so far, from /metrics."""
    metrics = read_metrics(base)
    out = {f"{stage}_busy_s": metrics[f'cadence_engine_busy_seconds{{stage="{stage}"}}']
           for stage in ("prefill", "t3", "s3gen") if f'cadence_engine_busy_seconds{{stage="{stage}"}}' in metrics}
    for series, key in (("cadence_decode_steps", "decode_steps"), ("cadence_decode_request_steps", "request_steps")):
        if series in metrics:
            out[key] = metrics[series]
    return out


def start_server(model: str, device: str, log: str | None = None, compile: bool | None = None,
                 watermark: bool = False, watermark_device: str | None = None,
                 options: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`cadence serve` in its own process on a free loopback port, once /health says ready; its output goes to
    the file `log` (default: discarded). `compile`: the server's `--compile` (None: its default). `options`: more
    of its settings by name (max_batch=32 becomes --max-batch 32; None values are left out)."""
    port = _port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    flags = ([] if compile is None else ["--compile" if compile else "--no-compile"]) + ([] if watermark else
                                                                                          ["--no-watermark"])
    flags += ["--watermark-device", watermark_device] if watermark_device else []
    for name, value in (options or {}).items():
        if value is True:  # a switch (ray=True becomes --ray)
            flags.append("--" + name.replace("_", "-"))
        elif value is not None and value is not False:
            flags += ["--" + name.replace("_", "-"), str(value)]
    server = subprocess.Popen([sys.executable, "-m", "cadence.cli", "serve", "--model", model, "--device", device,
                               "--port", str(port), *flags],
                              env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
    if log:
        out.close()  # the server holds its own copy of the descriptor
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while True:
        try:
            health = httpx.get(base + "/health", timeout=2).json()
            if health["status"] == "ready":
                return server, base
            if health["status"] == "error":
                server.terminate()
                raise RuntimeError(f"server failed to load: {health.get('error')}")
        except (httpx.HTTPError, ValueError):  # not up yet, or a proxy's plain-text answer while it starts
            pass
        if time.time() > deadline or server.poll() is not None:
            server.terminate()
            raise RuntimeError("server did not become ready")
        time.sleep(0.5)


def wait_idle(base: str, timeout: float, poll: float = 0.1) -> dict:
    """Poll /health until the engine holds no running or waiting request (or `timeout` passes); the last health."""
    deadline = time.time() + timeout
    while True:
        try:
            health = httpx.get(base + "/health").json()
        except httpx.HTTPError:  # one poll lost (e.g. the connection reset while the server dumped its stacks)
            if time.time() > deadline:
                raise
        else:
            if (health["running"] == 0 and health["waiting"] == 0) or time.time() > deadline:
                return health
        time.sleep(poll)


def run_serve_bench(model: str, device: str, levels: list[int], requests_per_client: int = 2, max_tokens: int = 750,
                    out_json: str | None = None, out_md: str | None = None, modes=(True, False),
                    level_timeout_s: float | None = None, server_log: str | None = None,
                    compile: bool | None = None, fmt: str = "mp3", watermark: bool = False,
                    engine_only: bool = True, client: str = "openai", watermark_device: str | None = None,
                    request_tokens: int | None = None, cold_probe: int = 8,
                    server_options: dict | None = None, ray: bool = False, ray_rounds: int = 2,
                    ray_proxy: str = "serve") -> dict:
    """Each level runs once per mode: streamed (audio while T3 decodes) and in one piece (batched S3Gen), its
    responses in `fmt` (mp3: the OpenAI default). A level still running after `level_timeout_s` is given up:
    the server is asked for its thread stacks (SIGUSR1, into `server_log`) and the bench goes on to the next
    level with what finished. `compile`: the server's `--compile`. With `engine_only`, the same levels then run
    on the batched engine in this process (`engine_replay`), for the HTTP layer's share. `client`: openai (the
    OpenAI Python client) or httpx. `watermark_device`: the server's `--watermark-device` (None: its default).
    `request_tokens`: every request's max_new_tokens (None: drawn from 75..`max_tokens`). `cold_probe`: that
    many clients send two requests each the moment the server says ready, and again once it is warm (0: skip),
    for how the first traffic after start compares with the steady state. `server_options`: more of the server's
    settings (memory_plan, max_batch, ...; `start_server`), the engine-only replay's engine built the same way.
    `ray`: Ray Serve with one replica (`cadence serve --ray --replicas 1`, the same settings) started beside the
    plain server once it is warm, and the levels run against both in turn for `ray_rounds` rounds
    (`serve_ray.interleaved_rounds`), for Serve's overhead against the plain server in one run; `ray_proxy`: the
    server's `--ray-proxy`."""
    t_start = time.perf_counter()
    if client not in ("openai", "httpx"):
        raise ValueError(f"client must be openai or httpx, got {client!r}")
    server, base = start_server(model, device, server_log, compile, watermark, watermark_device, server_options)
    servers = {base: server}
    ready_s = time.perf_counter() - t_start
    # The first traffic after ready (graphs still being captured), then the same requests once warm.
    probe = (lambda: asyncio.run(_level(base, cold_probe, 2 * cold_probe, 7, max_tokens, modes[0], None, fmt,
                                        client, request_tokens))) if cold_probe else None
    try:
        after_ready = probe() if probe else None
        while httpx.get(base + "/health").json().get("warming", 0):  # steady-state figures: graphs all captured
            time.sleep(0.5)
        warm_s = time.perf_counter() - t_start
        asyncio.run(_level(base, 2, 2, 0, 100, client_kind=client))  # warm-up
        when_warm = probe() if probe else None
        health = httpx.get(base + "/health").json()

        def run_level(base_url: str, c: int, stream: bool) -> dict:
            return asyncio.run(_level(base_url, c, c * requests_per_client, 1000 + c, max_tokens, stream,
                                      level_timeout_s, fmt, client, request_tokens))

        def run_levels(base_url: str, lvs: list[int], mds) -> list[dict]:
            return _run_levels(servers[base_url], base_url, lvs, mds, run_level)
        res = {"model": model, "device": health.get("device"), "plan": health.get("plan"), "compile": bool(compile),
               "ray_proxy": ray_proxy if ray else None,
               "format": fmt, "watermark": watermark, "watermark_device": watermark_device,
               "client": client, "request_tokens": request_tokens, "ready_s": ready_s, "warm_s": warm_s,
               "startup": health.get("startup", {}), "levels": []}
        if probe:
            res["first_traffic"] = {"after_ready": after_ready, "when_warm": when_warm,
                                    "latency_p50_ratio": after_ready["latency_p50_s"] / max(when_warm["latency_p50_s"],
                                                                                         1e-9)}
        serve_base = _start_ray_beside(res, servers, model, device, server_log, compile, watermark,
                                       watermark_device, {**(server_options or {}), "ray_proxy": ray_proxy},
                                       client) if ray else None
        if serve_base:
            rounds = interleaved_rounds(base, serve_base, levels, modes, ray_rounds, run_levels)
            res.update(levels=rounds[0]["plain"], ray_levels=rounds[0]["serve"], ray_rounds=rounds,
                       ray_summary=summarize(rounds))
        else:
            res["levels"] = run_levels(base, levels, modes)
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            proc.wait(120)
    if engine_only:
        from .engine_replay import replay
        plan = [(lv["concurrency"], level_bodies(lv["requests"], 1000 + lv["concurrency"], max_tokens, lv["stream"],
                                                 fmt, request_tokens)) for lv in res["levels"]]
        engine_options = {k: v for k, v in (server_options or {}).items() if v is not None and k != "encode_workers"}
        for lv, eng in zip(res["levels"], replay(model, device, plan, watermark, watermark_device, engine_options)):
            lv["engine_only_x_realtime"] = eng["x_realtime"]
            lv["engine_only"] = eng["engine"]
            lv["http_share_of_engine"] = lv["x_realtime"] / eng["x_realtime"] if eng["x_realtime"] else 0.0
    write_report(res, markdown(res), out_json, out_md)
    return res


def _start_ray_beside(res: dict, servers: dict, model, device, server_log, compile, watermark, watermark_device,
                      server_options, client) -> str | None:
    """`cadence serve --ray --replicas 1` on the same settings, beside the running plain server; its base URL, or
    None with `res["ray_error"]` saying why (the plain server's figures are then kept alone)."""
    try:
        server, base = start_server(model, device, server_log, compile, watermark, watermark_device,
                                    {**(server_options or {}), "ray": True, "replicas": 1})
    except RuntimeError as exc:
        res["ray_error"] = str(exc)
        print(f"Ray Serve: {exc} (its output: the server log)", file=sys.stderr)
        return None
    servers[base] = server
    asyncio.run(_level(base, 2, 2, 0, 100, client_kind=client))  # warm-up
    return base


def _run_levels(server: subprocess.Popen, base: str, levels: list[int], modes, run_level) -> list[dict]:
    """Every mode's levels against one running server, each with the engine's counters over it (from /metrics)."""
    import signal
    out = []
    for stream in modes:
        for c in levels:
            before = engine_counters(base)
            level = run_level(base, c, stream)
            if level["timed_out"] and hasattr(signal, "SIGUSR1"):
                server.send_signal(signal.SIGUSR1)
                wait_idle(base, 60)
            after = engine_counters(base)
            level["engine"] = {k: v - before.get(k, 0.0) for k, v in after.items()}  # over this level
            steps = level["engine"].get("decode_steps", 0)
            level["engine"]["mean_batch"] = level["engine"].get("request_steps", 0) / steps if steps else 0.0
            out.append(level)
            print(json.dumps(level), flush=True)
    return out


def markdown(res: dict) -> str:
    compiled = ", compiled" if res.get("compile") else ""
    lines = [f"`cadence serve` on {res['device']} (plan {res['plan']}{compiled}, watermark "
             f"{'on' if res.get('watermark') else 'off'}), driven over HTTP from another process; responses as "
             f"{res.get('format', 'pcm')} through the {res.get('client', 'httpx')} client"
             f"{'; watermark on ' + res['watermark_device'] if res.get('watermark') and res.get('watermark_device') else ''}"
             f"; ready {res.get('ready_s', 0):.1f} s after start, its graphs all captured "
             f"{res.get('warm_s', 0):.1f} s after start"
             f"{' (its phases: ' + describe(res['startup']) + ')' if res.get('startup') else ''}"
             ". Engine only: the same "
             "requests on the batched engine in one process, no HTTP.", "",
             "| clients | mode | requests ok / sent | errors | × real time | engine only | HTTP / engine | TTFA p50 "
             "| TTFA p99 | latency p50 | latency p99 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    first = res.get("first_traffic")
    if first:
        a, w = first["after_ready"], first["when_warm"]
        lines[0] += (f" First traffic: {a['concurrency']} clients × 2 requests sent the moment it said ready took "
                     f"{a['latency_p50_s']:.2f} s p50 ({a['x_realtime']:.1f}× real time), the same once warm "
                     f"{w['latency_p50_s']:.2f} s p50 ({w['x_realtime']:.1f}×): {first['latency_p50_ratio']:.2f}× "
                     "the warm latency.")
    for lv in res["levels"]:
        mode = ("streamed" if lv.get("stream", True) else "one piece") + (" (gave up)" if lv.get("timed_out") else "")
        eng = lv.get("engine_only_x_realtime")
        share = f"{100 * lv['http_share_of_engine']:.0f}%" if eng else "–"
        lines.append(f"| {lv['concurrency']} | {mode} | {lv['ok']} / {lv['requests']} | {lv['errors'] or 0} | "
                     f"**{lv['x_realtime']:.1f}** | {f'{eng:.1f}' if eng else '–'} | {share} | "
                     f"{lv['ttfa_p50_s']:.2f} s | {lv['ttfa_p99_s']:.2f} s | "
                     f"{lv['latency_p50_s']:.2f} s | {lv['latency_p99_s']:.2f} s |")
    if res.get("ray_error"):
        lines += ["", f"Through Ray Serve: not measured, the server did not start ({res['ray_error']})."]
    lines += ray_markdown(res.get("ray_summary") or [], res.get("ray_proxy") or "serve")
    return "\n".join(lines) + "\n"
