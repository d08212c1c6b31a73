"""Cadence on Ray Serve: one replica is one Cadence engine (one GPU, or CPU cores), serving the same FastAPI app as
`cadence serve` as the Serve ingress; Ray places replicas, routes each request to a lightly loaded one, streams
responses through its proxy, restarts a replica that dies and scales between bounds on queue depth.

`cadence serve --ray` runs it; users with their own Serve config build it with `build` (`serve run
cadence.ray:build model=... replicas=2`) or import `CadenceReplica`. The voice library is a directory every replica
reads (a shared or network filesystem on a cluster): a voice is read from its file on each use and written by an
atomic rename, so a voice added, replaced or removed through one replica is what every replica serves next.

A replica loads its model (and on a GPU captures its decode graphs) in its constructor: Serve sends it no traffic
until that is done. Each response names the replica that served it in `x-cadence-replica`."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

from .server.settings import ServerSettings

REPLICA_HEADER = b"x-cadence-replica"
PROXIES = ("serve", "haproxy")


@dataclass(frozen=True)
class RayOptions:
    """How the deployment is laid out. `replicas`: a count, or "auto" (one per GPU Ray sees, at least one);
    `min_replicas`/`max_replicas` set, Serve autoscales between them on `target_queue` ongoing requests per
    replica instead."""

    replicas: int | str = "auto"
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_queue: int = 64
    """Ongoing requests per replica the autoscaler aims at (a replica decodes up to max_batch at once)."""
    proxy: str = "serve"
    """What carries HTTP to the replicas: "serve" (Serve's proxy actor: Python, each streamed chunk a Ray object) or
    "haproxy" (Serve's HAProxy mode: HAProxy on the port, least-connections routing, and each replica serving HTTP
    itself through its own uvicorn, so requests and streams never pass through a Python proxy)."""
    cpus_per_replica: float | None = None
    """CPU cores Ray reserves per replica. Ray also gives the replica that many torch/OpenMP threads, and a GPU
    replica's CPU work (the watermark lanes, audio encoding, voice preparation) runs on them. None: the cluster's
    cores shared out — per GPU for GPU replicas, per replica (the autoscaling maximum) for CPU ones."""

    def __post_init__(self):
        if self.replicas != "auto" and (isinstance(self.replicas, bool) or not isinstance(self.replicas, int)
                                        or self.replicas < 1):
            raise ValueError(f"replicas must be a positive integer or 'auto', got {self.replicas!r}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("set both min_replicas and max_replicas (autoscaling), or neither")
        if self.min_replicas is not None and not 0 < self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 < min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")
        if self.proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {self.proxy!r}")
        if self.target_queue < 1 or (self.cpus_per_replica is not None and self.cpus_per_replica <= 0):
            raise ValueError("target_queue must be >= 1 and cpus_per_replica > 0")


class _NamedResponses:
    """ASGI wrapper: every HTTP response carries the replica's name."""

    def __init__(self, app, name: str):
        self.app, self.name = app, name.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.name)]}
            await send(message)
        await self.app(scope, receive, named)


class ReplicaCounts:
    """/health's `replicas` under Serve: how many replicas of this deployment are in each state (running, starting,
    ...), as Serve's controller reports them; asked at most every `ttl_s` seconds, so probes cost it little."""

    def __init__(self, app_name: str, deployment: str, ttl_s: float = 2.0):
        self.app_name, self.deployment, self.ttl_s = app_name, deployment, ttl_s
        self._at, self._value = 0.0, {}

    def __call__(self) -> dict:
        import time
        if time.monotonic() - self._at > self.ttl_s:
            from ray import serve
            try:
                status = serve.status().applications[self.app_name].deployments[self.deployment]
                states = {str(getattr(k, "value", k)).lower(): n for k, n in status.replica_states.items()}
                self._value = {"replicas": {"ready": states.get("running", 0), **states}}
            except Exception as exc:  # noqa: BLE001 - the controller may be restarting: say so, stay healthy
                self._value = {"replicas": {"error": f"{type(exc).__name__}: {exc}"}}
            self._at = time.monotonic()
        return self._value


def _replica_class():
    from ray import serve

    @serve.ingress()
    class CadenceReplica:
        """One Cadence engine behind Serve's proxy: the `cadence serve` app, loaded and warmed before traffic."""

        def __init__(self, settings: dict):
            from .engine.postprocess import prestart_watermark_workers
            from .server.app import create_app, engine_device, load_tts
            self.settings = ServerSettings(**settings)
            # as `cadence serve` does: the watermark's worker processes import while the checkpoint loads
            prestart_watermark_workers(engine_device(self.settings), self.settings.watermark,
                                       self.settings.watermark_device)
            tts = load_tts(self.settings)
            if self.settings.warmup and tts.device.type == "cuda":
                tts.engine.warmup()  # graphs captured before Serve routes anything here
            try:
                from ray import serve as _serve
                context = _serve.get_replica_context()
                self.name = context.replica_id.unique_id
                counts = ReplicaCounts(context.app_name, context.deployment)
            except Exception:  # noqa: BLE001 - outside a replica (tests of the class itself)
                self.name, counts = f"{socket.gethostname()}-{os.getpid()}", None
            self.cadence_app = create_app(ServerSettings(**{**settings, "warmup": False}), tts=tts,
                                          health_extra=counts)

        def __serve_build_asgi_app__(self):
            return _NamedResponses(self.cadence_app, self.name)

        def check_health(self):
            """Serve's health probe: a replica whose engine failed is replaced."""
            state = self.cadence_app.state.cadence
            if state.status == "error":
                raise RuntimeError(state.error or "the model failed")
            engine = state.tts._engine if state.tts is not None else None
            if engine is not None and engine._error is not None:
                raise RuntimeError(f"engine failed: {engine._error}")

    return CadenceReplica


def build(settings: ServerSettings | dict | None = None, options: RayOptions | None = None):
    """The Serve application: `serve.run(build(settings, options))`. As an application builder for `serve run
    cadence.ray:build key=value ...` it takes a dict of `ServerSettings` fields and `RayOptions` fields."""
    from ray import serve
    if isinstance(settings, dict) or settings is None:
        raw = dict(settings or {})
        option_names = set(RayOptions.__dataclass_fields__)
        opts = {k: _number(v) for k, v in raw.items() if k in option_names}
        settings = ServerSettings.from_env(**{k: v for k, v in raw.items() if k not in option_names})
        options = options or RayOptions(**opts)
    options = options or RayOptions()
    gpu = settings.device != "cpu" and _ray_gpus() > 0
    if options.min_replicas is not None:
        n = options.max_replicas
        scale = {"autoscaling_config": {"min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                                        "target_ongoing_requests": options.target_queue}}
    else:
        n = options.replicas if options.replicas != "auto" else max(1, int(_ray_gpus()))
        scale = {"num_replicas": n}
    cpus = options.cpus_per_replica
    if cpus is None:
        cpus = replica_cpus(_ray_cpus(), _ray_gpus() if gpu else 0.0, n)
    actor = {"num_cpus": cpus, "num_gpus": 1 if gpu else 0}
    deployment = serve.deployment(_replica_class(), name="cadence", ray_actor_options=actor,
                                  max_ongoing_requests=routing_depth(settings), health_check_period_s=5, **scale)
    return deployment.bind(asdict(settings))


def routing_depth(settings: ServerSettings) -> int:
    """Serve's `max_ongoing_requests` per replica: what the replica itself admits (the requests it decodes, at most
    64, plus `max_queue` waiting), as many again finishing (S3Gen, encoding, the response on its way back through
    Serve: they still count as ongoing for Serve but no longer for the replica's queue), plus one. So a replica
    whose queue is full is never one Serve holds requests back from: it is offered the next request and refuses it
    itself, with the server's 429, Retry-After and OpenAI-shaped body, which a client retries (Serve's own answer to
    an overfull proxy queue would be a bare 503); and one whose finished requests are still being sent keeps its
    decode slots filled."""
    slots = settings.max_batch or 64
    return settings.max_queue + 2 * slots + 1


def replica_cpus(cluster_cpus: float, cluster_gpus: float, replicas: int) -> int:
    """The cores a replica reserves by default: the cluster's per GPU for GPU replicas, else per replica; at least
    one. Ray runs a replica's torch with that many threads (OMP_NUM_THREADS): with Ray's usual single core a GPU
    replica's CPU-side work (watermark, encoding) ran on one thread."""
    share = cluster_cpus / cluster_gpus if cluster_gpus > 0 else cluster_cpus / max(1, replicas)
    return max(1, int(share))


def _ray_cpus() -> float:
    import ray
    return ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else 1.0


def _ray_gpus() -> float:
    import ray
    return ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else 0.0


def _number(v):
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    try:
        return float(v) if isinstance(v, str) and v.replace(".", "", 1).isdigit() else v
    except ValueError:
        return v


def patient_proxy() -> None:
    """Give Serve's HTTP proxy longer to start and answer its health checks than Ray's 5 s / 10 s (unless set): on a
    small, busy machine (2 cores loading models) the proxy was killed as unready and the deployment failed. Set in
    the environment before Ray starts, so its processes inherit it."""
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")


def proxy_environment(proxy: str) -> dict[str, str]:
    """The environment that selects Serve's HTTP proxy (`RayOptions.proxy`): Ray reads it when Serve's processes
    start, so it goes to this process and, through the job's runtime environment, to the controller and proxies."""
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1" if proxy == "haproxy" else "0"}


def _interrupt(*_) -> None:
    """SIGTERM handler: stop the way Ctrl-C does, so Serve and the local Ray cluster are shut down."""
    raise KeyboardInterrupt


def run(settings: ServerSettings, options: RayOptions, address: str | None = None, blocking: bool = True):
    """Start (or join, with `address`) a Ray cluster, deploy Cadence on it and serve HTTP on settings.host/port;
    with `blocking`, until interrupted, then shut Serve and Ray down."""
    env = proxy_environment(options.proxy)
    os.environ.update(env)  # before Serve's constants are read here; the cluster's processes get it below
    import ray
    from ray import serve
    patient_proxy()
    ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, runtime_env={"env_vars": env},
             log_to_driver=os.environ.get("CADENCE_RAY_LOGS", "1") != "0")
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(settings, options), name="cadence", route_prefix="/", blocking=False)
    if not blocking:
        return
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():  # SIGTERM (systemd, docker stop, a bench) as Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        import time
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
