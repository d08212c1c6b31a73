"""Engine-wide settings, fixed at load time."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


SPEECH_TOKENS_PER_S = 25  # S3 speech tokens per second of audio


def stream_seconds(value, name: str = "value"):
    """A streaming-context length as flags and environment variables spell it: seconds, or 'all' (also 'none'
    or empty) for no limit, which is None in `EngineConfig`. Non-strings pass through for EngineConfig to check."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("all", "none", ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be seconds or 'all', got {value!r}") from None


DEFAULT_STREAM_WINDOWS = (16, 16, 32, 64, 96)
MAX_WINDOW_TOKENS = 250  # 10 s of audio: past that a window is no longer streaming


def stream_windows(value, name: str = "stream_windows") -> tuple[int, ...]:
    """A streaming window ladder as flags and environment variables spell it ('16,16,32,64,96') or as a sequence
    of ints -> a tuple of ints, each a window's new speech tokens in [4, MAX_WINDOW_TOKENS], 1 to 8 of them."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name} must be a comma list of speech-token counts like 16,32,64, got {value!r}") \
                from None
    if (not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 8
            or any(isinstance(n, bool) or not isinstance(n, int) or not 4 <= n <= MAX_WINDOW_TOKENS for n in value)):
        raise ValueError(f"{name} must be 1 to 8 speech-token counts, each in [4, {MAX_WINDOW_TOKENS}] (25 per "
                         f"second), got {value!r}")
    return tuple(value)


def window_tokens(ladder: tuple[int, ...], k: int) -> int:
    """The new speech tokens of a stream's window k under `ladder`: its k-th size, the last one repeated."""
    return ladder[min(k, len(ladder) - 1)]


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of float32, bfloat16, float16") from None


@dataclass(slots=True)
class EngineConfig:
    device: str = "auto"
    """cpu, cuda, cuda:N, mps or auto (CUDA if present, else MPS, else CPU)."""
    memory_plan: str = "auto"
    """How weights are stored and placed (see `cadence.memory.plan.PLANS`): fp32, bf16, bf16-lowmem, int8,
    offload, cpu-int8, cpu-bf16, or auto (bf16 on CUDA, or the fastest plan that fits `vram_budget`; on the CPU
    cpu-int8, or cpu-bf16 where the CPU multiplies bf16 natively, or fp32 without FBGEMM; fp32 on MPS). fp32 is
    the reference-parity path everywhere."""
    vram_budget: str | None = None
    """With memory_plan auto: a VRAM budget such as '1.5GB' or '800MB', or 'auto' for 90% of free VRAM."""
    dtype: str = "auto"
    """Override: weight precision of T3 and the flow model (float32, bfloat16, float16); auto = the plan's.
    Weights are really cast; nothing runs under autocast."""
    vocoder_dtype: str = "auto"
    """Override: weight precision of the HiFT vocoder's convolutions; auto = the plan's (fp32 by default;
    the F0 predictor and harmonic source always stay fp32)."""
    prepare_device: str = "auto"
    """Where the voice-preparation encoders (S3 tokenizer, CAMPPlus, VoiceEncoder) run: auto (on a GPU, kept
    in pinned CPU memory and lent to the GPU only while a voice is prepared; on CPU, the CPU), cpu, or a
    device name to keep them resident there. Generation never needs them."""
    watermark_device: str = "cpu"
    """Where the Perth watermark runs: cpu (the postprocess lanes, one thread each, sized to the machine), auto
    (the engine's device) or a device name such as cuda. On a GPU its STFT and network take the GPU for a few
    milliseconds per clip (on their own CUDA stream) instead of a CPU core for 0.1-0.2 s per 30 s clip; the
    resampling to Perth's 32 kHz and back stays on the CPU either way."""
    cpu_threads: int | None = None
    """Threads PyTorch's CPU math uses (`torch.set_num_threads`; inter-op parallelism, which Cadence does not use,
    gets one thread). None = one per physical core, PyTorch's own choice. Set it lower to leave cores to other
    work on the machine (the server's encoders and watermark lanes run on CPU threads of their own)."""
    enforce_eager: bool = False
    """Disable CUDA graphs (T3 decode, CFM solve): the plain path, for debugging and parity."""
    voice_cache_mb: int = 256
    """Device memory for resident prepared voices (LRU by bytes); ~230 KB each at full size."""
    compile: bool | None = None
    """torch.compile the repeated blocks (T3's decoder layers, the CFM estimator's blocks) with dynamic shapes,
    before any graph is captured (CUDA only): faster T3 decoding and flow batches in isolation, for a one-time
    compile of about a minute on a cold Inductor cache (seconds on a warm one). Served on an H100 it gained
    streaming throughput but not one-piece throughput (docs/benchmarks.md). None = the plan's choice (off)."""
    eos_check_every: int = 16
    """How many decode steps run between host checks for end-of-speech."""
    max_batch: int | None = None
    """Concurrent requests the batched engine decodes together (KV slots). None = auto: as many as fit in half
    the free VRAM at engine start, at most 64 (8 on the CPU). Further requests wait; they never OOM."""
    kv_slot_len: int = 1536
    """KV positions per request slot in the batched engine: prompt (~40 + text tokens) + max_new_tokens must fit."""
    stream_prompt_s: float | None = 4.0
    """Streaming: seconds of the voice prompt (its end) each S3Gen window conditions on; None = the whole prompt
    (up to 10 s, as the one-piece path). A window's flow cost is mostly this context, so it sets time to first
    audio under load: 16 first windows over 10 s prompts cost ~2.5x what they cost over 4 s."""
    stream_history_s: float | None = 2.0
    """Streaming: seconds of audio already sent each later window conditions on; None = all of it (then a
    window's cost grows with the stream's length)."""
    stream_windows: tuple[int, ...] = DEFAULT_STREAM_WINDOWS
    """Streaming: the new speech tokens (25 a second) of each window in turn, the last repeated: a small first
    window for early first audio, then larger ones. Each window pays for its context (`stream_prompt_s`,
    `stream_history_s`) whatever its size, so where that cost is high (a CPU) small windows cannot keep up
    with playback: a larger first window gives playback a lead and larger later ones spread the context's cost
    over more audio. Windows are handed over between decode rounds (`eos_check_every` steps), so a size rounds up
    to a multiple of that. `cadence doctor --measure` estimates a ladder that plays without gaps on its machine."""
    first_audio_priority: bool = True
    """Streaming: the work a stream's first audio waits for goes first. Its admission, its first decode round
    and its first window take their GPU turns ahead of later windows (`cadence.engine.gpu_turns`), and while
    first windows render T3 holds its decode steps (at most 0.5 s), so those windows have the GPU to
    themselves: shorter time to first audio under load, for less overlap of decode and S3Gen meanwhile. The
    audio is the same either way."""

    overlap_audio: bool = False
    """Let S3Gen render stream windows on the GPU while T3 decodes. Off: windows and decode rounds take turns
    (`cadence.engine.gpu_turns`); finished requests' S3Gen runs beside the decode either way. On an H100 the
    two threads' CUDA graphs replayed side by side stalled the GPU, and with 32 streaming clients hung it."""

    def __post_init__(self):
        for value in (self.dtype, self.vocoder_dtype):
            if value != "auto":
                parse_dtype(value)
        from .memory.plan import ALL_PLANS, parse_size_mb
        if self.memory_plan != "auto" and self.memory_plan not in ALL_PLANS:
            raise ValueError(f"unknown memory plan {self.memory_plan!r}; choose from auto, {', '.join(ALL_PLANS)}")
        if self.vram_budget not in (None, "auto"):
            parse_size_mb(self.vram_budget)
        if not isinstance(self.watermark_device, str) or not self.watermark_device.strip():
            raise ValueError(f"watermark_device must be cpu, auto or a device name, got {self.watermark_device!r}")
        if not isinstance(self.voice_cache_mb, int) or self.voice_cache_mb < 1:
            raise ValueError(f"voice_cache_mb must be a positive integer, got {self.voice_cache_mb!r}")
        if self.cpu_threads is not None and (isinstance(self.cpu_threads, bool) or not isinstance(self.cpu_threads, int)
                                             or not 1 <= self.cpu_threads <= 1024):
            raise ValueError(f"cpu_threads must be an integer in [1, 1024] or None (one per core), got "
                             f"{self.cpu_threads!r}")
        if not isinstance(self.eos_check_every, int) or not 1 <= self.eos_check_every <= 256:
            raise ValueError(f"eos_check_every must be an integer in [1, 256], got {self.eos_check_every!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or not 1 <= self.max_batch <= 1024):
            raise ValueError(f"max_batch must be an integer in [1, 1024] or None (auto), got {self.max_batch!r}")
        if not isinstance(self.kv_slot_len, int) or not 64 <= self.kv_slot_len <= 8192:
            raise ValueError(f"kv_slot_len must be an integer in [64, 8192], got {self.kv_slot_len!r}")
        if self.compile not in (None, True, False):
            raise ValueError(f"compile must be true, false or None (the plan's choice), got {self.compile!r}")
        if not isinstance(self.overlap_audio, bool):
            raise ValueError(f"overlap_audio must be true or false, got {self.overlap_audio!r}")
        if not isinstance(self.first_audio_priority, bool):
            raise ValueError(f"first_audio_priority must be true or false, got {self.first_audio_priority!r}")
        self.stream_windows = stream_windows(self.stream_windows)
        for name in ("stream_prompt_s", "stream_history_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.2 <= value <= 60):
                raise ValueError(f"{name} must be seconds in [0.2, 60] or None (all), got {value!r}")

    def apply_cpu_threads(self) -> int:
        """Set PyTorch's CPU thread counts from `cpu_threads` (process-wide); -> the intra-op count in force."""
        if self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
        try:  # settable once, before any inter-op work; a second engine in the process keeps the first's
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        return torch.get_num_threads()

    def resolve_plan(self, device: torch.device):
        """-> (MemoryPlan with this config's explicit overrides applied, why it was chosen)."""
        from dataclasses import replace

        from .memory.plan import choose_plan
        plan, why = choose_plan(self.memory_plan, self.vram_budget, device)
        changes = {}
        if self.dtype != "auto":
            changes.update(t3_dtype=parse_dtype(self.dtype), flow_dtype=parse_dtype(self.dtype))
        if self.vocoder_dtype != "auto":
            changes["vocoder_dtype"] = parse_dtype(self.vocoder_dtype)
        if self.compile is not None:  # Inductor's kernels here are for CUDA: elsewhere the plain modules run
            changes["compile"] = self.compile and device.type == "cuda"
        return (replace(plan, **changes) if changes else plan), why

    def stream_context_tokens(self) -> tuple[int | None, int | None]:
        """(stream_prompt_s, stream_history_s) in speech tokens (25 per second)."""
        return tuple(None if s is None else max(1, round(s * SPEECH_TOKENS_PER_S))
                     for s in (self.stream_prompt_s, self.stream_history_s))

    def model_dtype(self, device: torch.device) -> torch.dtype:
        return self.resolve_plan(device)[0].t3_dtype

    @classmethod
    def from_kwargs(cls, **kwargs) -> "EngineConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise ValueError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return cls(**kwargs)
