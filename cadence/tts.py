"""`TTS`: the library facade. Load a checkpoint once, prepare voices, generate audio."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import watermark as wm
from .audio.io import read_audio
from .checkpoint import HUB_REPO, fingerprint, load_models, resolve
from .config import EngineConfig
from .family import ENGLISH, ModelFamily
from .engine.alignment_guard import attach_query_taps
from .engine.audio_runner import AudioRunner
from .engine.graphed import GraphedForward
from .engine.host_memory import keep_freed_blocks
from .engine.rng import RequestRNG
from .engine.t3_runner import T3Runner, clean_speech_tokens
from .memory.cpu_int8 import apply_flow_transforms_, quantize_cpu_int8_
from .memory.cpu_int8_cache import load_models_cached
from .memory.int8 import QUANT_FILE, load_int8_into, quantize_int8_, save_int8, t3_int8_targets
from .memory.lease import OnDemand
from .memory.placement import apply_placement, compile_regions
from .models.s3gen import S3GEN_SR, SILENCE_TOKEN
from .outputs import Audio
from .sampling_params import DEFAULT_MAX_NEW_TOKENS, SamplingParams
from .tts_engine import EngineAPI
from .voices.cache import VoiceCache, voice_key
from .voices.library import VoiceLibrary
from .voices.prepare import prepare_voice
from .voices.voice import Voice


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda, cuda:N, mps or auto, got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    return torch.device(device)


class TTS(EngineAPI):
    """Chatterbox text-to-speech with Cadence's engine.

    >>> tts = TTS.from_dir("checkpoints/chatterbox", device="cuda")
    >>> voice = tts.prepare_voice("speaker.wav")
    >>> audio = tts.generate("Hello there.", voice=voice, seed=1)
    """

    def __init__(self, t3, s3gen, ve, tokenizer, device: torch.device, default_voice: Voice | None,
                 watermark: bool = True, model_dir: Path | None = None, config: EngineConfig | None = None,
                 family: ModelFamily = ENGLISH):
        self.t3, self.s3gen, self.ve = t3, s3gen, ve
        self.family = family
        self.tokenizer = tokenizer
        self.device = device
        self.default_voice = default_voice
        self.watermark = watermark
        self.model_dir = model_dir
        self.config = config or EngineConfig()
        wm_dev = self.config.watermark_device
        self.watermark_device = str(device if wm_dev == "auto" else pick_device(wm_dev))
        """Where the Perth watermark runs (`EngineConfig.watermark_device`), resolved."""
        self.plan, self.plan_reason = self.config.resolve_plan(device)
        graphs = device.type == "cuda" and not self.config.enforce_eager
        # Under offload T3's decode graphs are captured per lease (its weights move) and released with it;
        # S3Gen runs eager there, since its whole-solve graphs' memory pools would raise the peak.
        self.t3_runner = T3Runner(t3, self.config.eos_check_every, use_graphs=graphs)
        window = self.plan.vocoder_window_s
        self.audio_runner = AudioRunner(s3gen, use_graphs=graphs and not self.plan.offload,
                                        vocoder_window_frames=int(window * 50) if window else None)
        self.sample_rate = S3GEN_SR
        self._prep_lease = None
        self.voice_cache = VoiceCache(device, self.config.voice_cache_mb << 20)
        self._stage_leases = (contextlib.nullcontext(), contextlib.nullcontext())
        self._library: VoiceLibrary | None = None
        self._engine = None  # the batched engine, started on first use (EngineAPI.engine)
        # Encoders resident on the GPU: CAMPPlus (launch-bound) replays as a CUDA graph per input length.
        resident_prep = s3gen.speaker_encoder.head.conv1.weight.device.type == "cuda"
        self._speaker_encoder = GraphedForward(s3gen.speaker_encoder) if resident_prep and graphs else None

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | os.PathLike, device: str | None = "auto", watermark: bool = True,
                 config: EngineConfig | None = None, family: str | None = None, **engine_options) -> "TTS":
        """Load a local directory in the official layout (ve/t3_cfg/s3gen safetensors, tokenizer.json,
        optional conds.pt default voice), or a hub id. Engine options (`EngineConfig` fields: dtype, vocoder_dtype,
        prepare_device, enforce_eager, compile, eos_check_every) come as `config` or keywords. `family`
        (english, turbo, multilingual): which model of a hub repo or directory that holds several
        (`ResembleAI/chatterbox` holds the original and the multilingual one); unset: the files decide."""
        config = config or EngineConfig.from_kwargs(device=device or "auto", **engine_options)
        path = resolve(path, family)
        dev = pick_device(config.device)
        config.apply_cpu_threads()
        if dev.type == "cpu":  # the CPU forwards' tensors reuse freed memory instead of fresh pages
            keep_freed_blocks()
        on_demand = config.prepare_device == "auto" and dev.type != "cpu"
        prep = torch.device("cpu") if on_demand or config.prepare_device == "cpu" else (
            dev if config.prepare_device == "auto" else pick_device(config.prepare_device))
        plan, _ = config.resolve_plan(dev)
        if plan.cpu_int8:  # the int8 layers from the user's cache (built on background threads as the rest loads)
            t3, s3gen, ve, model_cfg = load_models_cached(path, family, fingerprint(path, family))
        else:
            t3, s3gen, ve, model_cfg = load_models(path, family=family)
        family = model_cfg.family
        # Offloaded stages are placed on the CPU and lent to the GPU per request: never all on the GPU at once.
        stage_dev = torch.device("cpu") if plan.offload else dev
        apply_placement(t3, s3gen, ve, stage_dev, plan.t3_dtype, plan.vocoder_dtype, prep, flow_dtype=plan.flow_dtype)
        if plan.t3_int8 and not load_int8_into(t3, path / QUANT_FILE, fingerprint(path, family.name), plan.t3_dtype):
            quantize_int8_(t3, plan.t3_dtype, t3_int8_targets)
        if plan.cpu_int8:
            quantize_cpu_int8_(t3, s3gen, fingerprint(path, family.name))
        apply_flow_transforms_(s3gen.flow, plan)
        tokenizer = family.load_tokenizer(path)
        default = Voice.from_conds_pt(path / "conds.pt") if (path / "conds.pt").is_file() else None
        attach_query_taps(t3, family.aligned_heads)  # what the end-of-speech rules read (multilingual)
        if plan.compile:
            compile_regions(t3, s3gen)
        tts = cls(t3, s3gen, ve, tokenizer, dev, default, watermark=watermark, model_dir=path, config=config,
                  family=family)
        if plan.offload:  # the two stages take turns on the GPU; weights wait in pinned CPU memory, and each
            # stage's later parts are still in transfer while its first ones compute
            tts._stage_leases = (OnDemand([t3], dev, pipeline=list(t3.tfmr.layers)),
                                 OnDemand([s3gen.flow, s3gen.mel2wav], dev, pipeline=[s3gen.flow.decoder, s3gen.mel2wav]))
        if on_demand:  # the preparation encoders visit the GPU only while a voice is being prepared
            tts._prep_lease = OnDemand([s3gen.tokenizer, s3gen.speaker_encoder, ve], dev)
        if tts.t3_runner.use_graphs and not plan.offload:
            # capture the common case at load, not on the first request
            tts.t3_runner.graph_decoder(2 if family.cfg_pair else 1, 1024)
        return tts

    @classmethod
    def from_pretrained(cls, repo_id: str = HUB_REPO, device: str | None = "auto", watermark: bool = True,
                        family: str | None = None, **engine_options) -> "TTS":
        """Download (or reuse the cached) official checkpoint from the Hugging Face hub; `family="multilingual"`
        takes the multilingual model of `ResembleAI/chatterbox`."""
        return cls.from_dir(resolve(repo_id, family), device=device, watermark=watermark, family=family,
                            **engine_options)

    # --- voices -------------------------------------------------------------------------------
    def prepare_voice(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None,
                      exaggeration: float = 0.5) -> Voice:
        """Reference recording (path, or mono/stereo array with `sample_rate`) -> reusable `Voice`."""
        if isinstance(audio, (str, os.PathLike)):
            wav, sr = read_audio(audio)
        else:
            if sample_rate is None:
                raise ValueError("sample_rate is required when audio is an array")
            wav, sr = np.asarray(audio, dtype=np.float32), int(sample_rate)
        def run() -> Voice:
            with self._prep_lease or contextlib.nullcontext():
                f = self.family
                voice = prepare_voice(self.s3gen, self.ve, self.t3.cfg.prompt_len, wav, sr, exaggeration,
                                      self._speaker_encoder, t3_prompt_seconds=f.voice_t3_seconds,
                                      target_lufs=f.voice_lufs, min_seconds=f.min_voice_seconds)
                voice.meta["family"] = f.name
                return voice
        if self._engine is not None and not self._engine.on_gpu_thread():
            # The engine's GPU thread runs it between decode steps: lending the encoders to the GPU and their
            # graphs must not race the engine's CUDA graphs (e.g. a server re-preparing a library voice).
            return self._engine.call(run).result()
        return run()

    @property
    def fingerprint(self) -> str:
        if "_fingerprint" not in self.__dict__:
            self._fingerprint = fingerprint(self.model_dir, self.family.name) if self.model_dir else ""
        return self._fingerprint

    def save_quantized(self, path: str | os.PathLike | None = None) -> Path:
        """Write this model's int8 T3 (memory plan int8 or offload) next to the checkpoint, or to `path`, so the
        next load with an int8 plan reads it instead of quantising again."""
        if not self.plan.t3_int8:
            raise ValueError(f"memory plan {self.plan.name!r} has no int8 weights to save; load with memory_plan='int8'")
        dest = Path(path) if path else self.model_dir / QUANT_FILE
        with self._stage_leases[0]:
            save_int8(self.t3, dest, self.fingerprint)
        return dest

    def library(self, root: str | os.PathLike | None = None) -> VoiceLibrary:
        """The voice library at `root` (default: $CADENCE_VOICES or the per-user data dir), bound to this
        checkpoint: voices prepared by other weights are re-prepared from their stored audio."""
        if root is not None or self._library is None:
            lib = VoiceLibrary(root, fingerprint=self.fingerprint, family=self.family.name,
                               preparer=lambda wav, sr, ex: self.prepare_voice(wav, sample_rate=sr, exaggeration=ex))
            if root is not None:
                return lib
            self._library = lib
        return self._library

    def voice(self, name: str | None = None, library: VoiceLibrary | None = None) -> Voice:
        """A library voice by name; None or "default" (when no voice has that name) is the checkpoint's
        built-in conds.pt voice."""
        lib = library or self.library()
        if name in (None, "default") and (name is None or name not in lib):
            if self.default_voice is None:
                raise ValueError("this checkpoint has no default voice (conds.pt); name a library voice")
            return self.default_voice
        return lib.get(name)

    def voice_or_default(self, voice: Voice | str | None) -> Voice:
        """`voice`, a library voice by name, or the checkpoint's built-in one (conds.pt) when None."""
        if isinstance(voice, str):  # a library voice by name ("default": the built-in one)
            return self.voice(voice)
        if voice is not None and not isinstance(voice, Voice):
            raise ValueError(f"voice must be a Voice, a library voice name or None, got {type(voice).__name__}")
        voice = voice or self.default_voice
        if voice is None:
            raise ValueError("no voice: pass voice=tts.prepare_voice(...) (this checkpoint has no conds.pt)")
        made_for = voice.meta.get("family", self.family.name)  # conds.pt voices carry none: taken as ours
        if made_for != self.family.name:
            raise ValueError(f"this voice was prepared for Chatterbox {made_for}; this model is Chatterbox "
                             f"{self.family.name}: prepare it again with this model (a library voice is, by name)")
        return voice

    # --- generation ---------------------------------------------------------------------------
    def text_ids(self, text: str, language: str | None = None) -> list[int]:
        """Normalised, tokenised text (without the start/stop framing) in `language` (the multilingual model
        needs one); ValueError if it is too long or the model does not speak the language."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty")
        c = self.t3.cfg
        ids = self.tokenizer.encode(self.family.normalize(text), self.family.check_language(language))
        framing = len(self.t3.frame_text([]))
        if len(ids) + framing > c.max_text_tokens:
            raise ValueError(f"text is too long: {len(ids)} tokens (at most {c.max_text_tokens - framing} per request); "
                             "render long text with `cadence say --file` or `cadence.longform.render_file`")
        return ids

    def text_tokens(self, text: str, language: str | None = None) -> torch.Tensor:
        return torch.tensor(self.t3.frame_text(self.text_ids(text, language)), device=self.device)

    def generate(self, text: str, voice: Voice | None = None, *, params: SamplingParams | None = None,
                 watermark: bool | None = None, speech_tokens_only: bool = False, speed: float = 1.0,
                 **knobs) -> Audio:
        """Synthesize `text`. Knobs are `SamplingParams` fields (exaggeration, cfg_weight, temperature,
        repetition_penalty, min_p, top_p, top_k, max_new_tokens, seed, language, alignment_stop), given directly
        or as `params`. `speech_tokens_only` masks T3 ids that are neither speech tokens nor EOS (benchmarks on random
        weights use it to keep every generated token). `speed` (0.25-4) is the speaking rate, pitch kept."""
        from .audio.speed import check_speed
        speed = check_speed(speed)
        if not isinstance(text, str) or not text.strip():
            self.text_ids(text)  # the same ValueError as every other path: not a string, or empty
        params = params or self.params(**knobs)
        params.check_family(self.family)
        if params.max_new_tokens > self.t3.cfg.max_speech_tokens:
            raise ValueError(f"max_new_tokens={params.max_new_tokens} exceeds this model's "
                             f"{self.t3.cfg.max_speech_tokens} speech positions")
        voice = self.voice_or_default(voice)
        params = self.with_voice_language(params, voice)
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2 ** 62, ()).item())
        rng = RequestRNG(seed, self.device)
        timings = {}
        t0 = time.perf_counter()
        t3_lease, s3_lease = self._stage_leases
        with t3_lease:
            try:
                tokens = self._t3(text, voice, params, seed, speech_tokens_only)
            finally:  # under offload the decode graphs point at lent weights: they go with the lease
                if self.plan.offload:
                    self.t3_runner.release()
        timings["t3"] = time.perf_counter() - t0
        speech = clean_speech_tokens(tokens)
        t1 = time.perf_counter()
        if speech:
            with s3_lease:
                wav = self.audio_runner.synthesize(torch.tensor(self.s3gen_tokens(speech)),
                                                   self.voice_cache.get(voice).voice, rng, speed=speed)[0]
                wav = wav.cpu().numpy()
        else:
            wav = np.zeros(0, dtype=np.float32)
        timings["s3gen"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        marked = False
        if (self.watermark if watermark is None else watermark) and wav.size:
            wav, marked = wm.apply(wav, self.sample_rate, self.watermark_device)
        timings["watermark"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        timings["t3_tokens_per_s"] = len(tokens) / max(timings["t3"], 1e-9)
        return Audio(samples=wav.astype(np.float32), sample_rate=self.sample_rate, tokens=speech,
                     watermarked=marked, timings=timings)

    def with_voice_language(self, params: SamplingParams, voice: Voice | None) -> SamplingParams:
        """`params` with the voice's stored language where the model needs a language and the request gave none."""
        if params.language is None and self.family.language_required and voice is not None and voice.language:
            params.language = voice.language
        return params

    def params(self, **knobs) -> SamplingParams:
        """`SamplingParams` for this model: the knobs given over its family's defaults, and an unset
        `max_new_tokens` within what the loaded T3 holds (1000, or fewer on a small checkpoint)."""
        if knobs.get("max_new_tokens") is None:
            knobs["max_new_tokens"] = min(DEFAULT_MAX_NEW_TOKENS, self.t3.cfg.max_speech_tokens)
        return SamplingParams.for_family(self.family, **knobs)

    def s3gen_tokens(self, speech: list[int]) -> list[int]:
        """What S3Gen renders of a finished request's speech tokens: Turbo's end on silence tokens, as trained."""
        return speech + [SILENCE_TOKEN] * self.family.silence_tokens

    def _t3(self, text: str, voice: Voice, params: SamplingParams, seed: int,
            speech_only: bool = False) -> list[int]:
        prefill = self.prefill(text, voice, params)
        return self.t3_runner.generate(prefill, params, seed, speech_only=speech_only,
                                       prefix=self.voice_prefix(voice)).tokens

    @torch.inference_mode()
    def voice_prefix(self, voice: Voice) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The keys and values of T3's prompt positions that are the voice's alone (`T3Runner.voice_prefix`),
        computed once per resident voice; None where T3 decodes in CUDA graphs (their prefill runs on the GPU,
        where recomputing the prefix costs less than copying it). On the CPU this is most of Turbo's prefill: 251
        of a short request's ~270 positions."""
        if self.t3_runner.use_graphs:
            return None
        resident = self.voice_cache.get(voice)
        dtype = self.t3.dtype
        if dtype not in resident.t3_prefix:
            resident.t3_prefix[dtype] = self.t3_runner.voice_prefix(self._voice_embeds(resident))
            self.voice_cache.grown()
        return resident.t3_prefix[dtype]

    def voice_prompt(self, voice: Voice) -> tuple[str, torch.Tensor]:
        """(the voice's cache key, T3's conditioning of it (1, P, C)): the first P prompt positions of every
        request with this voice, which the batched decoder keeps once for all of them (`SharedPrompts`)."""
        return voice_key(voice), self._voice_embeds(self.voice_cache.get(voice))

    def _voice_embeds(self, resident) -> torch.Tensor:
        """T3's conditioning of a resident voice (1, P, C): the perceiver runs once per voice, not per request."""
        dtype = self.t3.dtype
        if dtype not in resident.t3_embeds:
            v = resident.voice
            resident.t3_embeds[dtype] = self.t3.voice_embeds(v.speaker_emb.to(dtype), v.t3_prompt_tokens)
        return resident.t3_embeds[dtype]

    @torch.inference_mode()
    def prefill(self, text: str, voice: Voice, params: SamplingParams, cfg_pair: bool | None = None) -> torch.Tensor:
        """T3's prompt embeddings for one request, (2, L, C) with the CFG pair (default: when cfg_weight > 0)."""
        exaggeration = voice.exaggeration if params.exaggeration is None else params.exaggeration
        embeds = self._voice_embeds(self.voice_cache.get(voice))
        ex = torch.tensor([float(exaggeration)], device=self.device)
        pair = self.family.cfg_pair and params.cfg_weight > 0 if cfg_pair is None else cfg_pair
        return self.t3.prefill_embeds(embeds, ex, self.text_tokens(text, params.language), pair)
