"""Side-by-side timing of Cadence's plain fp32 path and the reference on one checkpoint (same device, same
process): load, voice preparation, T3 tokens/s for a forced token count, S3Gen time. Writes JSON."""
import contextlib
import json
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ckpt, wav, out = sys.argv[1], sys.argv[2], sys.argv[3]
dev = "cuda" if torch.cuda.is_available() else "cpu"
N = int(os.environ.get("N_TOKENS", "200"))


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    sync(); t = time.perf_counter(); r = fn(); sync()
    return r, time.perf_counter() - t


res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "n_tokens": N}
from cadence.engine.rng import RequestRNG  # noqa: E402
from cadence.sampling_params import SamplingParams  # noqa: E402
from cadence.tts import TTS  # noqa: E402

ours, res["cadence_load_s"] = timed(lambda: TTS.from_dir(ckpt, device=dev, watermark=False))
voice, res["cadence_prepare_cold_s"] = timed(lambda: ours.prepare_voice(wav))
voice, res["cadence_prepare_warm_s"] = timed(lambda: ours.prepare_voice(wav))
p = SamplingParams(max_new_tokens=N, seed=1)
ours.generate("Warm up.", voice=voice, params=SamplingParams(max_new_tokens=8, seed=0))
pre = ours.prefill("Hello there, this is a quick test of the reference model.", voice, p)
r, t = timed(lambda: ours.t3_runner.generate(pre, p, torch.Generator(device=dev).manual_seed(1)))
res["cadence_t3_tokens"] = len(r.tokens); res["cadence_t3_tok_per_s"] = len(r.tokens) / t
toks = torch.randint(0, 6561, (N,))
_, res["cadence_s3gen_s"] = timed(lambda: ours.audio_runner.synthesize(toks, voice, RequestRNG(2, dev)))
if dev == "cuda":
    res["cadence_peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
del ours
torch.cuda.empty_cache() if dev == "cuda" else None
if dev == "cuda":
    torch.cuda.reset_peak_memory_stats()

if not hasattr(torch.backends.cuda, "sdp_kernel"):
    torch.backends.cuda.sdp_kernel = lambda **_: contextlib.nullcontext()
from chatterbox.tts import ChatterboxTTS  # noqa: E402

ref, res["reference_load_s"] = timed(lambda: ChatterboxTTS.from_local(ckpt, dev))
_, res["reference_prepare_cold_s"] = timed(lambda: ref.prepare_conditionals(wav))
_, res["reference_prepare_warm_s"] = timed(lambda: ref.prepare_conditionals(wav))
tt = ref.tokenizer.text_to_tokens("Hello there, this is a quick test of the reference model.")
tt = torch.nn.functional.pad(torch.nn.functional.pad(torch.cat([tt, tt]), (1, 0), value=255), (0, 1), value=0).to(dev)
from chatterbox.models.t3.modules.cond_enc import T3Cond  # noqa: E402
c = ref.conds.t3
cond = lambda: T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens, emotion_adv=c.emotion_adv)  # noqa: E731
ref.t3.inference(t3_cond=cond(), text_tokens=tt, max_new_tokens=8)
with torch.inference_mode():
    out_tokens, t = timed(lambda: ref.t3.inference(t3_cond=cond(), text_tokens=tt, max_new_tokens=N, temperature=.8,
                                                   cfg_weight=.5, repetition_penalty=1.2, min_p=.05, top_p=1.))
res["reference_t3_tokens"] = out_tokens.shape[1]; res["reference_t3_tok_per_s"] = out_tokens.shape[1] / t
_, res["reference_s3gen_s"] = timed(lambda: ref.s3gen.inference(toks.to(dev), ref_dict=ref.conds.gen))
if dev == "cuda":
    res["reference_peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res, indent=1))
