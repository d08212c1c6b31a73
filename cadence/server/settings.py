"""Server settings: one typed object, filled from flags or `CADENCE_*` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from ..config import DEFAULT_STREAM_WINDOWS
from ..early_start import default_encode_workers


@dataclass
class ServerSettings:
    model: str = "ResembleAI/chatterbox"
    """Checkpoint directory or hub repo id."""
    family: str | None = None
    """Which model of a hub repo (or directory) that holds several: english, turbo or multilingual
    (`ResembleAI/chatterbox` holds english and multilingual); None: the files decide."""
    host: str = "127.0.0.1"
    """Interface to listen on (loopback by default: expose it on purpose)."""
    port: int = 8000
    device: str = "auto"
    memory_plan: str = "auto"
    vram_budget: str | None = None
    """With memory_plan auto: the VRAM the models may use, e.g. 1.5GB, or auto (90% of free VRAM)."""
    dtype: str = "auto"
    """T3 and flow weights: auto (the plan's), bfloat16, float32 or float16."""
    max_batch: int | None = None
    """KV slots of the batched engine (requests decoded together); None sizes it to the free VRAM, at most 64."""
    kv_slot_len: int = 1536
    """KV positions per slot: a request's prompt plus its max_new_tokens must fit (`EngineConfig.kv_slot_len`)."""
    vocoder_dtype: str = "auto"
    """HiFT weights: auto (the plan's), float32 or bfloat16."""
    prepare_device: str = "auto"
    """Where uploaded voices are prepared: auto (on the GPU only while preparing), cuda or cpu."""
    voice_cache_mb: int = 256
    """Device memory for resident prepared voices (least recently used ones leave)."""
    enforce_eager: bool = False
    """No CUDA graphs (debugging)."""
    cpu_threads: int | None = None
    """Threads of PyTorch's CPU math; None = one per physical core. See `EngineConfig.cpu_threads`."""
    library: str | None = None
    """Voice library directory (default: $CADENCE_VOICES or the per-user data dir)."""
    api_key: str | None = None
    """When set, /v1/* requires `Authorization: Bearer <api_key>`."""
    cors_origins: list[str] = field(default_factory=list)
    """Origins allowed by CORS (empty: no CORS headers)."""
    max_input_chars: int = 4096
    """Longest `input` accepted by /v1/audio/speech."""
    max_body_mb: float = 25.0
    """Largest request body (voice uploads included)."""
    max_queue: int = 256
    """Requests waiting for a KV slot beyond which new ones get 429 with Retry-After."""
    request_timeout_s: float = 300.0
    """A request still unfinished after this long is cancelled (504)."""
    watermark: bool = True
    """Apply the Perth watermark to every response (`--no-watermark` turns it off for all)."""
    watermark_device: str = "cpu"
    """Where the watermark runs: cpu (a pool of postprocess threads sized to the machine), auto (the engine's
    device) or a device name. See `EngineConfig.watermark_device`."""
    encode_workers: int = 0
    """Threads encoding responses (mp3, opus, aac, flac) off the event loop; 0 = a quarter of the CPU cores, 2 to 4.
    More is slower beside a GPU engine: on an H200 host (16 cores), 64 clients of mp3 got 94x real time from 4
    encoders and 73x from 16, whose encoding took the cores the GPU threads launch from."""
    warmup: bool = True
    """Capture the engine's CUDA graphs while serving, from the start (/health's `warming` counts those left;
    a step whose graph is not there yet runs eagerly) instead of on first use."""
    stream_prompt_s: float | None = 4.0
    """Streaming: seconds of the voice prompt each S3Gen window conditions on; None (or 'all') = the whole prompt.
    See `EngineConfig.stream_prompt_s`."""
    stream_history_s: float | None = 2.0
    """Streaming: seconds of audio already sent each window conditions on; None (or 'all') = all of it."""
    stream_windows: tuple[int, ...] = DEFAULT_STREAM_WINDOWS
    """Streaming: new speech tokens of each window in turn, the last repeated ('16,32,64' in the environment).
    See `EngineConfig.stream_windows`."""
    first_audio_priority: bool = True
    """Streaming: T3 holds its decode while first windows render. See `EngineConfig.first_audio_priority`."""
    overlap_audio: bool = False
    """S3Gen's stream windows run beside T3's decode instead of taking turns. See `EngineConfig.overlap_audio`."""
    compile: bool | None = None
    """torch.compile the models' repeated blocks at start (about a minute on a cold cache) for ~20% more
    throughput. None = the memory plan's choice (off). See `EngineConfig.compile`."""

    def __post_init__(self):
        if self.family is not None:
            from ..family import family_named
            family_named(self.family)  # ValueError naming the families
        from ..config import EngineConfig, stream_seconds, stream_windows
        for name in ("stream_prompt_s", "stream_history_s"):
            setattr(self, name, stream_seconds(getattr(self, name), name))
        self.stream_windows = stream_windows(self.stream_windows)
        # the engine's own rule, checked before the model loads
        EngineConfig(stream_prompt_s=self.stream_prompt_s, stream_history_s=self.stream_history_s,
                     stream_windows=self.stream_windows, first_audio_priority=self.first_audio_priority,
                     overlap_audio=self.overlap_audio,
                     compile=self.compile, vram_budget=self.vram_budget, dtype=self.dtype, max_batch=self.max_batch,
                     kv_slot_len=self.kv_slot_len, vocoder_dtype=self.vocoder_dtype,
                     prepare_device=self.prepare_device, voice_cache_mb=self.voice_cache_mb,
                     enforce_eager=self.enforce_eager, watermark_device=self.watermark_device,
                     cpu_threads=self.cpu_threads)
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        for name in ("max_input_chars", "max_queue"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")
        if int(self.encode_workers) < 0:
            raise ValueError(f"encode_workers must be >= 0 (0: a quarter of the CPU cores, 2 to 4), got "
                             f"{self.encode_workers}")
        self.encode_workers = int(self.encode_workers) or default_encode_workers()
        if float(self.max_body_mb) <= 0 or float(self.request_timeout_s) <= 0:
            raise ValueError("max_body_mb and request_timeout_s must be positive")

    @classmethod
    def from_env(cls, **overrides) -> "ServerSettings":
        """CADENCE_MODEL, CADENCE_HOST, CADENCE_PORT, CADENCE_API_KEY, CADENCE_CORS_ORIGINS (comma list), ...;
        explicit keyword overrides (flags) win; None overrides are ignored."""
        values = {}
        for f in fields(cls):
            env = os.environ.get("CADENCE_" + f.name.upper())
            if env is not None:
                try:
                    values[f.name] = _parse(f.name, env)
                except ValueError as exc:
                    raise ValueError(f"CADENCE_{f.name.upper()}={env!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(name: str, raw: str):
    if name == "cors_origins":
        return [o.strip() for o in raw.split(",") if o.strip()]
    if name in ("port", "max_input_chars", "max_queue", "encode_workers", "max_batch", "kv_slot_len", "voice_cache_mb",
                "cpu_threads"):
        return int(raw)
    if name in ("max_body_mb", "request_timeout_s"):
        return float(raw)
    if name in ("stream_prompt_s", "stream_history_s"):
        from ..config import stream_seconds
        return stream_seconds(raw, name)
    if name == "stream_windows":
        from ..config import stream_windows
        return stream_windows(raw, name)
    if name in ("watermark", "warmup", "first_audio_priority", "overlap_audio", "compile", "enforce_eager"):
        return _flag(name, raw)
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}")
