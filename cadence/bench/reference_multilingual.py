"""The stock Chatterbox Multilingual (`ChatterboxMultilingualTTS` of chatterbox-tts 0.1.7) measured as `cadence
bench` measures Cadence: the same checkpoint, voice, texts (English) and token counts, in the same process."""

from __future__ import annotations

import contextlib
import gc
import os

import torch


def bench_reference_multilingual(opt, wav_path: str) -> dict:
    """T3 through the reference's `t3.inference`, its alignment analyzer running as it always does there, bounded to
    each case's token count: EOS is blocked in the raw logits (random weights would stop at any step) and an EOS
    the analyzer forces is undone (random attention trips its rules); the analyzer's hooks, eager attention and
    host copies still run every step. S3Gen over random valid tokens of that count, 10 steps."""
    if not hasattr(torch.backends.cuda, "sdp_kernel"):
        torch.backends.cuda.sdp_kernel = lambda **_: contextlib.nullcontext()
    import chatterbox.models.tokenizers.tokenizer as tokenizer_module
    from chatterbox.models.t3.inference.alignment_stream_analyzer import AlignmentStreamAnalyzer
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS, punc_norm

    from .offline import Case, _mem, _reset_peak, _timed, measure_cases
    # The reference fetches Cangjie5_TC.json through the hub into the checkpoint directory; a local one is there.
    tokenizer_module.hf_hub_download = lambda repo_id, filename, cache_dir=None, **_: os.path.join(cache_dir, filename)
    res: dict = {"engine": "reference chatterbox-tts 0.1.7 (multilingual, alignment analyzer on)"}
    _reset_peak(opt.device)
    ref, res["load_s"] = _timed(opt.device, lambda: ChatterboxMultilingualTTS.from_local(opt.model, opt.device))
    res["after_load"] = _mem(opt.device)
    _, res["prepare_cold_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    _, res["prepare_warm_s"] = _timed(opt.device, lambda: ref.prepare_conditionals(wav_path))
    stop = ref.t3.hp.stop_speech_token
    # a large finite value, not -inf: CFG's cond - uncond of two -inf is NaN
    block_eos = ref.t3.speech_head.register_forward_hook(
        lambda m, i, o: o.index_fill_(-1, torch.tensor([stop], device=o.device), -1e9))
    analyzer_step = AlignmentStreamAnalyzer.step

    def unforced_step(self, logits, next_token=None):
        out = analyzer_step(self, logits.clone(), next_token=next_token)
        return logits if bool(out[..., stop].max() >= 2 ** 15) else out
    AlignmentStreamAnalyzer.step = unforced_step
    c = ref.conds.t3
    gen = torch.Generator().manual_seed(opt.seed)

    def run(case: Case):
        tt = ref.tokenizer.text_to_tokens(punc_norm(case.text), language_id="en").to(opt.device)
        tt = torch.nn.functional.pad(torch.cat([tt, tt]), (1, 0), value=ref.t3.hp.start_text_token)
        tt = torch.nn.functional.pad(tt, (0, 1), value=ref.t3.hp.stop_text_token)
        cond = T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                      emotion_adv=c.emotion_adv)
        with torch.inference_mode():
            toks, t3_s = _timed(opt.device, lambda: ref.t3.inference(
                t3_cond=cond, text_tokens=tt, max_new_tokens=case.tokens, temperature=0.8, cfg_weight=0.5,
                repetition_penalty=2.0, min_p=0.05, top_p=1.0))
            speech = torch.randint(0, 6561, (case.tokens,), generator=gen).to(opt.device)
            (wav_out, _), s3_s = _timed(opt.device, lambda: ref.s3gen.inference(speech_tokens=speech,
                                                                               ref_dict=ref.conds.gen))
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
        AlignmentStreamAnalyzer.step = analyzer_step
    del ref
    gc.collect()
    with contextlib.suppress(Exception):
        torch.cuda.empty_cache()
    return res
