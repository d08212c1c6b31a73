"""`cadence serve --ray` as a user starts it, through `cadence bench serve --ray`: the plain server and, beside it,
Ray Serve (one replica of a tiny checkpoint, a local cluster the command starts), the same levels against both in
one report, here with HAProxy in front (`--ray-proxy haproxy`; the other tests use Serve's proxy); SIGTERM (what the bench, systemd or `docker stop` send) shuts Serve and the local cluster down, leaving no
Ray process. About 60-90 s on 2 cores (two servers, Ray's start)."""

import time

import pytest

pytest.importorskip("ray")

from tests.unit.test_ray_serve import _ray_processes  # noqa: E402


def test_bench_serve_measures_the_same_levels_through_ray_serve_then_sigterm_leaves_no_ray_process(tiny_ckpt,
                                                                                                   tmp_path):
    from cadence.bench.serve import run_serve_bench
    if _ray_processes():
        pytest.skip("a Ray cluster is already running on this machine")
    md = tmp_path / "s.md"
    res = run_serve_bench(str(tiny_ckpt), "cpu", [2], requests_per_client=1, max_tokens=120, modes=(True,),
                          cold_probe=0, engine_only=False, ray=True, ray_rounds=1, ray_proxy="haproxy",
                          out_md=str(md),
                          server_log=str(tmp_path / "log"))
    plain, served = res["levels"][0], res["ray_levels"][0]
    for level in (plain, served):
        assert level["ok"] == 2 and not level["errors"] and level["x_realtime"] > 0
    assert served["ttfa_p50_s"] < served["latency_p50_s"]  # streamed through Serve's proxy, not buffered
    assert served["engine"]["decode_steps"] > 0  # the replica's engine counters, read through the proxy
    assert "HAProxy is enabled" in (tmp_path / "log").read_text()  # the mode Serve's controller reports
    text = md.read_text()
    assert res["ray_summary"][0]["rounds"] == 1 and res["ray_summary"][0]["serve"]["errors"] == 0
    assert "| 2 | streamed | 2 / 2 | 0 |" in text and "| 2 | streamed |" in text.split("Through Ray Serve")[1]
    deadline = time.time() + 30
    while _ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(), _ray_processes()


def test_bench_serve_refuses_zero_rounds_with_one_line(tiny_ckpt):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "cadence.cli", "bench", "serve", "--model", str(tiny_ckpt),
                          "--device", "cpu", "--ray", "--ray-rounds", "0"], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "--ray-rounds must be at least 1" in lines[0], run.stderr
