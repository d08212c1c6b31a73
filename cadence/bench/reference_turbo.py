"""The stock Chatterbox Turbo (`ChatterboxTurboTTS` of chatterbox-tts 0.1.7) measured as `cadence bench` measures
Cadence: the same checkpoint, voice, texts and token counts, in the same process."""

from __future__ import annotations

import contextlib
import gc

import torch

def norm_loudness_numpy1(wav, sr, target_lufs=-27):
    """The reference Turbo's `norm_loudness` as it computes under numpy 1.x: the same meter and gain, the
    product kept float32 (numpy 1's value-based casting). Under numpy 2 its float32 * float64 product is
    float64, and its own S3 tokenizer then fails on the float64 audio (upstream #499: every custom voice
    fails), so the reference is run with numpy 1's semantics for this one step."""
    import math

    import numpy as np
    import pyloudnorm
    gain = 10.0 ** ((target_lufs - pyloudnorm.Meter(sr).integrated_loudness(wav)) / 20.0)
    return wav * np.float32(gain) if math.isfinite(gain) and gain > 0.0 else wav


def bench_reference_turbo(opt, wav_path: str) -> dict:
    """T3 through the reference's `inference_turbo` bounded to each case's token count (EOS blocked with a
    forward hook, as random weights would stop at any step), S3Gen over random valid tokens of that count plus
    Turbo's three silence tokens, 2 meanflow steps."""
    from chatterbox.tts_turbo import ChatterboxTurboTTS, punc_norm

    from ..models.s3gen import SILENCE_TOKEN
    from .offline import Case, _mem, _reset_peak, _timed, measure_cases
    res: dict = {"engine": "reference chatterbox-tts 0.1.7 (Turbo)"}
    _reset_peak(opt.device)
    ref, res["load_s"] = _timed(opt.device, lambda: ChatterboxTurboTTS.from_local(opt.model, opt.device))
    ref.norm_loudness = norm_loudness_numpy1  # upstream #499 under numpy 2
    res["after_load"] = _mem(opt.device)
    _, res["prepare_cold_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    _, res["prepare_warm_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    stop = ref.t3.hp.stop_speech_token
    block_eos = ref.t3.speech_head.register_forward_hook(lambda m, i, o: o.index_fill_(-1, torch.tensor([stop], device=o.device), float("-inf")))
    gen = torch.Generator().manual_seed(opt.seed)

    def run(case: Case):
        ids = ref.tokenizer(punc_norm(case.text), return_tensors="pt").input_ids.to(opt.device)
        with torch.inference_mode():
            # inference_turbo samples one token from the prefill, then up to max_gen_len more
            toks, t3_s = _timed(opt.device, lambda: ref.t3.inference_turbo(
                ref.conds.t3, ids, temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2,
                max_gen_len=case.tokens - 1))
            speech = torch.cat((torch.randint(0, 6561, (case.tokens,), generator=gen), torch.full((3,), SILENCE_TOKEN)))
            (wav_out, _), s3_s = _timed(opt.device, lambda: ref.s3gen.inference(
                speech_tokens=speech.to(opt.device), ref_dict=ref.conds.gen, n_cfm_timesteps=2))
            wav = wav_out.squeeze(0).cpu().numpy()
            _, wm_s = _timed(opt.device, lambda: ref.watermarker.apply_watermark(wav, sample_rate=ref.sr))
        audio_s = wav_out.shape[-1] / 24000
        total = t3_s + s3_s + (wm_s if opt.watermark else 0.0)
        return {"t3_s": t3_s, "t3_tokens": int(toks.shape[1]), "t3_tok_per_s": toks.shape[1] / t3_s,
                "s3gen_s": s3_s, "watermark_s": wm_s, "total_s": total, "audio_s": audio_s, "rtf": total / audio_s}

    try:
        res.update(measure_cases(opt, run))
    finally:
        block_eos.remove()
    del ref
    gc.collect()
    with contextlib.suppress(Exception):
        torch.cuda.empty_cache()
    return res
