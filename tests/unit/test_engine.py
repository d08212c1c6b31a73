"""The batched engine on the tiny model (CPU, fp32): a request's audio does not depend on its batch-mates."""

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from cadence.engine.request import Request, RequestCancelled
from cadence.engine.rng import RequestRNG
from cadence.random_checkpoint import synthetic_voice
from cadence.sampling_params import SamplingParams

TEXTS = ["Hello there, friend.", "A somewhat longer sentence that should produce more tokens overall.", "Short one."]


@pytest.fixture(scope="module")
def voice2(tiny_tts):
    return tiny_tts.prepare_voice(synthetic_voice(seconds=4.0, seed=3), sample_rate=24000, exaggeration=0.7)


def _alone(tts, texts, voices, knobs):
    return [tts.generate(t, voice=voices[i], **{k: v[i] for k, v in knobs.items()}) for i, t in enumerate(texts)]


def test_batched_requests_equal_alone_with_their_own_knobs_and_voices(tiny_tts, voice2):
    # Different lengths: the requests leave the batch at different steps.
    knobs = dict(seed=[1, 2, 3], max_new_tokens=[30, 60, 45], temperature=[0.8, 1.0, 0.7], top_k=[0, 50, 0],
                 exaggeration=[None, 0.9, 0.3], cfg_weight=[0.5, 0.0, 0.8])
    voices = [None, voice2, None]
    alone = _alone(tiny_tts, TEXTS, voices, knobs)
    many = tiny_tts.generate_many(TEXTS, voice=voices, **knobs)
    for a, b in zip(alone, many):
        assert a.tokens == b.tokens and len(a.tokens) > 0
        # S3Gen groups whatever finished while it was busy: a padded batch reorders fp32 sums, nothing more
        assert a.samples.shape == b.samples.shape
        assert np.abs(a.samples - b.samples).max() <= 1e-4 * max(1.0, np.abs(a.samples).max())


def test_requests_finishing_together_go_through_s3gen_as_one_padded_batch(tiny_tts, voice2):
    knobs = dict(seed=[5, 6, 7], max_new_tokens=[40, 40, 40], top_p=[1.0, 0.9, 1.0])
    voices = [voice2, None, voice2]
    alone = _alone(tiny_tts, TEXTS, voices, knobs)
    before = tiny_tts.engine.stats.s3gen_s
    many = tiny_tts.generate_many(TEXTS, voice=voices, **knobs)
    assert tiny_tts.engine.stats.s3gen_s > before
    for a, b in zip(alone, many):
        assert a.tokens == b.tokens
        assert a.samples.shape == b.samples.shape
        # fp32 batched convolutions reorder sums: not bit-equal, equal to float precision
        assert np.abs(a.samples - b.samples).max() <= 1e-4 * max(1.0, np.abs(a.samples).max())


def test_a_request_does_not_depend_on_its_batch_mates(tiny_tts):
    solo = tiny_tts.generate_many([TEXTS[1]], seed=11, max_new_tokens=50)[0]
    crowd = tiny_tts.generate_many(TEXTS + [TEXTS[1]], seed=[1, 2, 3, 11], max_new_tokens=[20, 70, 50, 50])[3]
    assert solo.tokens == crowd.tokens
    np.testing.assert_allclose(solo.samples, crowd.samples, atol=1e-4)


def test_more_requests_than_slots_wait_and_all_finish(tiny_ckpt):
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, max_batch=2, kv_slot_len=256, memory_plan="fp32")
    try:
        with pytest.raises(ValueError, match="KV positions"):
            tts.generate_many(["a few words"], max_new_tokens=300)
        tts.engine.warmup()  # no graphs on the CPU: a no-op that must not disturb the engine
        from cadence.engine.warmup import warm_bursts
        steps = tts.engine.stats.decode_steps
        warm_bursts(tts.engine)  # what warmup() runs on CUDA: whole bursts through the engine, which ends idle
        assert tts.engine.stats.decode_steps > steps and tts.engine.load["running"] == 0
        texts = [f"Request number {i} is here." for i in range(5)]
        many = tts.generate_many(texts, seed=list(range(5)), max_new_tokens=25)
        alone = [tts.generate(t, seed=i, max_new_tokens=25) for i, t in enumerate(texts)]
        assert tts.engine.max_batch == 2
        assert all(a.tokens == b.tokens for a, b in zip(alone, many))
        assert tts.engine.stats.slot_steps <= 2 * tts.engine.stats.decode_steps
    finally:
        tts.close()


def test_cancel_frees_the_slot_and_the_engine_keeps_serving(tiny_tts):
    long = tiny_tts.submit(Request(TEXTS[1], tiny_tts.default_voice,
                                   SamplingParams(seed=1, max_new_tokens=400), ignore_eos=True))
    time.sleep(0.3)
    long.cancel()
    with pytest.raises(RequestCancelled):
        long.result(timeout=30)
    deadline = time.time() + 10
    while tiny_tts.engine.load["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert tiny_tts.engine.load["running"] == 0
    audio = tiny_tts.submit(Request(TEXTS[0], tiny_tts.default_voice, SamplingParams(seed=2, max_new_tokens=20))).result(30)
    assert audio.samples.size > 0


def test_ignore_eos_runs_exactly_max_new_tokens(tiny_tts):
    audio = tiny_tts.submit(Request(TEXTS[2], tiny_tts.default_voice, SamplingParams(seed=3, max_new_tokens=37),
                                    speech_tokens_only=True, ignore_eos=True)).result(30)
    assert len(audio.tokens) == 37
    assert audio.samples.size == 37 * 2 * 480
    assert audio.timings["t3_tokens"] == 37 and audio.timings["total"] >= audio.timings["t3"]


def test_async_submit_yields_audio_chunks(tiny_tts):
    async def collect():
        handle = tiny_tts.submit(Request(TEXTS[0], tiny_tts.default_voice, SamplingParams(seed=4, max_new_tokens=20)))
        return [chunk async for chunk in handle]

    chunks = asyncio.run(collect())
    assert chunks and chunks[-1].final and chunks[-1].sample_rate == 24000
    assert sum(c.samples.size for c in chunks) == tiny_tts.generate(TEXTS[0], seed=4, max_new_tokens=20).samples.size


def test_generate_many_rejects_bad_input_clearly(tiny_tts):
    with pytest.raises(ValueError, match="seed has 2 values for 3 texts"):
        tiny_tts.generate_many(TEXTS, seed=[1, 2])
    with pytest.raises(ValueError, match="unknown generation option"):
        tiny_tts.generate_many(TEXTS, temprature=0.5)
    with pytest.raises(ValueError, match="list of strings"):
        tiny_tts.generate_many("just one string")
    with pytest.raises(ValueError, match="temperature"):
        tiny_tts.generate_many(TEXTS, temperature=[0.5, -1.0, 0.5])


def test_flow_batch_equals_each_request_alone(tiny_tts, voice2):
    ar = tiny_tts.audio_runner
    toks = [torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(n)) for n in (20, 50, 35)]
    voices = [tiny_tts.default_voice, voice2, tiny_tts.default_voice]
    alone = [ar.mel(t, v, RequestRNG(i, "cpu")) for i, (t, v) in enumerate(zip(toks, voices))]
    batch = ar.mel_batch([(t, v, RequestRNG(i, "cpu")) for i, (t, v) in enumerate(zip(toks, voices))])
    for a, b in zip(alone, batch):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    waves = ar.vocode_batch(alone, [RequestRNG(i, "cpu") for i in range(3)])
    for i, (m, w) in enumerate(zip(alone, waves)):
        torch.testing.assert_close(w, ar.vocode(m, RequestRNG(i, "cpu")), rtol=1e-4, atol=1e-4)


def test_too_many_new_tokens_for_the_model_is_refused_not_crashed(tiny_tts):
    with pytest.raises(ValueError, match="speech positions"):
        tiny_tts.generate_many(["Hi."], max_new_tokens=600)
    with pytest.raises(ValueError, match="speech positions"):
        tiny_tts.generate("Hi.", max_new_tokens=600)
    assert tiny_tts.generate_many(["Still serving."], seed=1, max_new_tokens=10)[0].samples.size > 0


def test_concurrency_bench_level_reports_throughput_and_occupancy(tiny_tts):
    from cadence.bench.concurrency import _run_level, markdown, svg_plot
    level = _run_level(tiny_tts, [tiny_tts.default_voice], [20, 35, 50], seed=3)
    assert level["n"] == 3 and level["audio_s"] == pytest.approx((20 + 35 + 50) / 25, rel=1e-6)
    assert 0 < level["t3_occupancy"] <= 1 and level["x_realtime"] > 0 and level["latency_p99_s"] >= level["latency_p50_s"]
    svg = svg_plot([1, 4, 16], [10.0, 30.0, 80.0], "t")
    assert svg.startswith("<svg") and svg.count("<circle") == 3
    res = {"device": "cpu", "plan": "fp32", "max_batch": 8, "kv_slot_len": 1536, "graph_capture_s": 0.0,
           "levels": [level], "uniform_32x30s": level,
           "busy_latency": {"alone_s": 1.0, "in_batch_of_16_s": 1.5, "ratio": 1.5},
           "token_agreement": {"requests": 8, "identical": 8, "mean_common_prefix_tokens": 200.0, "mean_tokens": 200.0}}
    assert "| 3 |" in markdown(res)


def test_a_prefill_out_of_memory_admits_the_newcomers_one_by_one(tiny_tts, monkeypatch):
    """A padded prefill of several newcomers that runs out of GPU memory is retried one request at a time, and
    every request gets the tokens it gets alone."""
    texts = TEXTS[:2]
    alone = [tiny_tts.generate(t, seed=40 + i, max_new_tokens=30, speech_tokens_only=True) for i, t in enumerate(texts)]
    eng = tiny_tts.engine
    real = eng.decoder.admit_many
    sizes = []

    def admit_many(entries):
        sizes.append(len(entries))
        if len(entries) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return real(entries)
    monkeypatch.setattr(eng.decoder, "admit_many", admit_many)
    hold = threading.Event()
    busy = eng.call(hold.wait)  # the GPU thread waits here: both requests arrive before it schedules
    handles = [tiny_tts.submit(Request(t, None, SamplingParams(seed=40 + i, max_new_tokens=30), speech_tokens_only=True))
               for i, t in enumerate(texts)]
    hold.set()
    busy.result(timeout=30)
    got = [h.result(timeout=120) for h in handles]
    assert [a.tokens for a in alone] == [g.tokens for g in got]
    assert 2 in sizes and sizes.count(1) >= 2


def test_voice_preparation_runs_on_the_gpu_thread_once_the_engine_runs(tiny_tts, monkeypatch):
    """With the engine started, preparing a voice from any thread (a server re-preparing a library voice from a
    request's worker thread) runs on the engine's GPU thread between decode steps, never beside its graphs."""
    import cadence.tts as tts_module
    threads = []
    real = tts_module.prepare_voice

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)
    monkeypatch.setattr(tts_module, "prepare_voice", spy)
    tiny_tts.engine  # started
    clip = synthetic_voice(seconds=3.0, seed=5)
    v = tiny_tts.prepare_voice(clip, sample_rate=24000)
    inside = tiny_tts.engine.call(lambda: tiny_tts.prepare_voice(clip, sample_rate=24000)).result(timeout=60)
    assert threads == ["cadence-engine", "cadence-engine"]  # the second ran directly: no self-deadlock
    assert torch.equal(v.prompt_tokens, inside.prompt_tokens)


def test_an_idle_engine_admits_a_burst_together(tiny_ckpt, monkeypatch):
    import cadence.engine.engine as engine_module
    from cadence.tts import TTS
    # generous gaps: this checks the gathering, not how fast a loaded 2-core CI machine submits
    monkeypatch.setattr(engine_module, "GATHER_GAP_S", 0.2)
    monkeypatch.setattr(engine_module, "GATHER_MAX_S", 2.0)
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, max_batch=8, kv_slot_len=256, memory_plan="fp32")
    try:
        eng = tts.engine
        sizes = []
        admit = eng._admit
        monkeypatch.setattr(eng, "_admit", lambda admitted: (sizes.append(len(admitted)), admit(admitted))[1])
        handles = []
        for i in range(4):  # the engine wakes on the first while the rest are still on their way
            handles.append(tts.submit(Request(f"Burst number {i}.", tts.default_voice,
                                              SamplingParams(seed=i, max_new_tokens=8))))
            time.sleep(0.05)
        for h in handles:
            h.result()
        assert sizes[0] == 4, sizes
    finally:
        tts.close()


def test_one_requests_watermark_does_not_hold_up_another(tiny_tts, monkeypatch):
    """Postprocess lanes: a request whose watermark is still running (here: held until released) does not
    delay another request's delivery on another lane."""
    from cadence import watermark as wm
    from cadence.engine.postprocess import Postprocess
    eng = tiny_tts.engine
    release = threading.Event()
    monkeypatch.setattr(wm, "apply", lambda wav, sr, device="cpu": (release.wait(60), (wav, True))[1])
    old, eng.post = eng.post, Postprocess(eng, lanes=2)
    try:
        held = tiny_tts.submit(Request("Held in its watermark.", None, SamplingParams(seed=1, max_new_tokens=20),
                                       watermark=True))
        time.sleep(0.5)  # let it reach its watermark first
        free = tiny_tts.submit(Request("Not watermarked.", None, SamplingParams(seed=2, max_new_tokens=20),
                                       watermark=False))
        assert free.result(timeout=60).samples.size > 0 and not release.is_set()
        release.set()
        assert held.result(timeout=60).watermarked
    finally:
        release.set()
        eng.post.shutdown()
        eng.post = old


def test_watermark_device_is_one_knob_from_config_to_the_postprocess_lane(tiny_ckpt, monkeypatch):
    """`watermark_device` resolves once (cpu, auto = the engine's device, or a name) and is where the lanes
    watermark; a bad value is a ValueError before anything loads."""
    from cadence import watermark as wm
    from cadence.config import EngineConfig
    from cadence.tts import TTS
    with pytest.raises(ValueError, match="watermark_device"):
        EngineConfig(watermark_device="")
    with pytest.raises(ValueError, match="device must be"):
        TTS.from_dir(tiny_ckpt, device="cpu", watermark_device="tpu")
    seen = []
    monkeypatch.setattr(wm, "apply", lambda wav, sr, device="cpu": (seen.append(device), (wav, True))[1])
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=True, watermark_device="auto")
    try:
        assert tts.watermark_device == "cpu"
        out = tts.submit(Request("Marked where it was asked.", None, SamplingParams(seed=3, max_new_tokens=12)))
        assert out.result(timeout=60).watermarked and seen and set(seen) == {"cpu"}
    finally:
        tts.close()


def test_s3gen_batches_hand_each_length_group_out_as_it_is_rendered(tiny_tts, voice2, monkeypatch):
    """`synthesize_batch(on_done=...)`: each flow group's waveforms reach the caller before the next group renders
    (shortest first), every request exactly once, and the waves are the ones returned without a callback."""
    ar = tiny_tts.audio_runner
    ratio = ar.s3gen.flow.cfg.token_mel_ratio
    lengths = (40, 12, 30, 20)
    toks = [torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    voices = [tiny_tts.default_voice, voice2, voice2, tiny_tts.default_voice]

    def items():
        return [(t, v, RequestRNG(i, "cpu")) for i, (t, v) in enumerate(zip(toks, voices))]
    budget = 2 * ratio * (40 + 160)  # two rows of up to 40 tokens: (12, 20) then (30, 40)
    plain = ar.synthesize_batch(items(), flow_frames=budget)
    events = []
    real_mel_batch = ar.mel_batch
    monkeypatch.setattr(ar, "mel_batch", lambda group, *a: (events.append(("flow", len(group))), real_mel_batch(group, *a))[1])
    waves = ar.synthesize_batch(items(), flow_frames=budget,
                                on_done=lambda idx, w: events.append(("done", list(idx), w)))
    assert [e[:2] for e in events] == [("flow", 2), ("done", [1, 3]), ("flow", 2), ("done", [2, 0])], events
    for _, idx, w in (e for e in events if e[0] == "done"):
        for i, wave in zip(idx, w):
            assert wave is waves[i]
    for a, b in zip(plain, waves):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("by_group, expected", [
    (True, ["flow", "done", "done", "flow", "flow", "done", "flow", "done"]),
    (False, ["flow", "flow", "flow", "flow", "done", "done", "done", "done"])])
def test_a_finished_wave_leaves_s3gen_a_group_at_a_time_and_an_oom_retry_renders_no_group_twice(
        tiny_tts, monkeypatch, by_group, expected):
    """Four requests finishing together, S3Gen's flow budget two rows: the first group is delivered before the second
    renders (`AudioWorker.deliver_by_group`; without it, all four after the last); the second runs out of memory once,
    so its rows are retried alone, and the rendered group is not rendered again. Every request gets the audio it
    gets alone."""
    from cadence.engine.audio_worker import AudioWorker
    monkeypatch.setattr(AudioWorker, "deliver_by_group", by_group)
    eng, ar = tiny_tts.engine, tiny_tts.audio_runner
    texts = [f"Request number {i} of the wave." for i in range(4)]
    params = [SamplingParams(seed=20 + i, max_new_tokens=24) for i in range(4)]

    def submit_all():
        return [tiny_tts.submit(Request(t, tiny_tts.default_voice, p, watermark=False, speech_tokens_only=True,
                                        ignore_eos=True)) for t, p in zip(texts, params)]
    alone = [tiny_tts.submit(Request(t, tiny_tts.default_voice, p, watermark=False, speech_tokens_only=True,
                                     ignore_eos=True)).result(60) for t, p in zip(texts, params)]
    events, failed_once = [], []
    real_synth, real_mel_batch, real_submit = ar.synthesize_batch, ar.mel_batch, eng.post.submit

    def synthesize_batch(items, **kw):
        longest = max(int(t.numel()) for t, _, _ in items)
        return real_synth(items, flow_frames=2 * ar.s3gen.flow.cfg.token_mel_ratio * (longest + 160), **kw)

    def mel_batch(group, *a):
        events.append(("flow", len(group)))
        if sum(1 for e in events if e[0] == "flow") == 2 and not failed_once:
            failed_once.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return real_mel_batch(group, *a)

    import cadence.engine.engine as engine_module
    monkeypatch.setattr(engine_module, "GATHER_GAP_S", 0.2)  # the four are admitted (and finish) together
    monkeypatch.setattr(engine_module, "GATHER_MAX_S", 2.0)
    monkeypatch.setattr(ar, "synthesize_batch", synthesize_batch)
    monkeypatch.setattr(ar, "mel_batch", mel_batch)
    monkeypatch.setattr(eng.post, "submit", lambda r, *a: (events.append(("done", id(r))), real_submit(r, *a))[1])
    together = [h.result(60) for h in submit_all()]
    kinds = [e[0] for e in events]
    # group 1 rendered (and delivered); group 2 out of memory; its two rows alone (each delivered as it is done)
    assert kinds == expected, events
    assert len({e[1] for e in events if e[0] == "done"}) == 4
    for a, b in zip(alone, together):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(b.samples, a.samples, atol=1e-4 * max(1.0, float(np.abs(a.samples).max())))
