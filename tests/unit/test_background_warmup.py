"""Background graph capture beside traffic (`cadence.engine.warmup.BackgroundWarmup`), on a fake clock: graphs a
running request waits for go first and at once; planned ones take at most `PLANNED_SHARE` of the GPU thread's time
while requests run, and go back to back while the engine is idle."""

import threading
from types import SimpleNamespace

from cadence.engine import warmup
from cadence.engine.warmup import BackgroundWarmup


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _engine(clock, capture_s=0.1):
    captured = []

    def capture(key):
        captured.append(("decode", key))
        clock.t += capture_s

    def prepare(rows, frames, steps, device, dtype):
        captured.append(("flow", (rows, frames, steps)))
        clock.t += capture_s
    decoder = SimpleNamespace(wanted=[], capture=capture)
    flow = SimpleNamespace(wanted=[], lock=threading.Lock(), prepare=prepare)
    runner = SimpleNamespace(cfm_graphs=flow, device="cpu", flow_dtype=None)
    engine = SimpleNamespace(decoder=decoder, tts=SimpleNamespace(audio_runner=runner))
    return engine, captured


def test_planned_captures_keep_to_their_share_while_busy():
    clock = FakeClock()
    engine, captured = _engine(clock)
    warm = BackgroundWarmup(engine, clock=clock)
    warm.tasks.extend(("decode", (b, 512, False, False)) for b in (1, 2, 4, 8))
    assert warm.run_one(busy=True)  # the first may go at once (0.1 s)
    wait = 0.1 * (1 - warmup.PLANNED_SHARE) / warmup.PLANNED_SHARE
    clock.t += wait - 0.01  # decode rounds worth a little less than four captures
    assert not warm.run_one(busy=True) and len(captured) == 1
    clock.t += 0.01
    assert warm.run_one(busy=True) and len(captured) == 2
    # over a long busy stretch, planned captures took at most their share of the time
    start, n0 = clock.t, len(captured)
    while warm.tasks:
        if not warm.run_one(busy=True):
            clock.t += 0.016  # a decode round
    assert (len(captured) - n0) * 0.1 <= warmup.PLANNED_SHARE * (clock.t - start) + 0.1


def test_a_waiting_requests_decode_graph_goes_first_and_unthrottled():
    clock = FakeClock()
    engine, captured = _engine(clock)
    warm = BackgroundWarmup(engine, clock=clock)
    warm.tasks.extend(("decode", (b, 512, False, False)) for b in (1, 2))
    assert warm.run_one(busy=True)  # planned: now throttled
    engine.decoder.wanted.append((8, 768, True, True))
    engine.tts.audio_runner.cfm_graphs.wanted.append((1, 1024, 2))
    assert warm.run_one(busy=True)  # the decode graph at once, despite the throttle
    assert not warm.run_one(busy=True)  # a flow graph (up to ~1 s of capture) keeps to the throttle
    clock.t += 1.0
    assert warm.run_one(busy=True)  # then goes ahead of the plan
    assert captured[1:] == [("decode", (8, 768, True, True)), ("flow", (1, 1024, 2))]
    assert not warm.run_one(busy=True)  # the plan is held back again


def test_no_flow_capture_while_the_audio_worker_has_work():
    """A flow capture holds the lock every S3Gen solve takes: none, asked for or planned, while S3Gen has work."""
    clock = FakeClock()
    engine, captured = _engine(clock)
    warm = BackgroundWarmup(engine, clock=clock)
    warm.tasks.append(("flow", (1, 128, 10)))
    engine.tts.audio_runner.cfm_graphs.wanted.append((2, 192, 10))
    clock.t += 10.0
    assert not warm.run_one(busy=True, audio_busy=True) and not captured
    engine.decoder.wanted.append((4, 256, False, False))
    assert warm.run_one(busy=True, audio_busy=True)  # a decode graph still goes
    clock.t += 10.0
    assert warm.run_one(busy=True) and warm.run_one(busy=False)
    assert captured == [("decode", (4, 256, False, False)), ("flow", (2, 192, 10)), ("flow", (1, 128, 10))]


def test_idle_engine_captures_back_to_back():
    clock = FakeClock()
    engine, captured = _engine(clock)
    warm = BackgroundWarmup(engine, clock=clock)
    warm.tasks.extend(("decode", (b, 512, False, False)) for b in (1, 2, 4, 8))
    assert warm.run_one(busy=True)
    assert all(warm.run_one(busy=False) for _ in range(3)) and not warm.tasks
    assert not warm.run_one(busy=False)  # nothing left


def test_the_first_traffics_decode_graphs_lead_the_plan_and_ready_waits_for_them(monkeypatch):
    """The graphs a first burst of default requests steps through (one admission's batch sizes, default sampling
    flags, a prompt and ~300 tokens) are captured first; `wait_first` (a server's `ready`) returns once they are."""
    from types import MethodType

    from cadence.engine.batch_t3 import LENGTH_LADDER, BatchDecoder, batch_ladder
    monkeypatch.setattr("cadence.engine.cfm_graph.flow_graph_shapes", lambda *a: [])
    clock = FakeClock()
    engine, captured = _engine(clock)
    graphs = {}
    flags = [(False, False), (True, True)]  # the family's defaults use top-k and top-p
    keys = [(b, a, *f) for b in batch_ladder(64) for a in LENGTH_LADDER[:8] for f in flags]
    engine.decoder.graph_keys = lambda fl: keys
    engine.decoder.lengths = list(LENGTH_LADDER[:8])  # the decoder's own bucketing over them
    engine.decoder.length_for = MethodType(BatchDecoder.length_for, engine.decoder)
    engine.decoder.graphs = graphs
    engine.decoder.capture = lambda key: (captured.append(key), graphs.setdefault(key, object()))
    engine.max_batch = 64
    engine.prefill_len = lambda n_text_ids: 200 + n_text_ids  # a Turbo-like prompt: 201 to 300 positions
    engine.tts.family = SimpleNamespace(defaults={"top_k": 1000, "top_p": 0.95})
    warm = BackgroundWarmup(engine, clock=clock)
    warm.plan(1000)
    first = {(b, a, True, True) for b in (1, 2, 4, 8, 16) for a in (256, 384, 512, 640)}  # 201 to 600 positions
    assert set(warm.first) == first and warm.first_pending == len(first)
    assert {k for _, k in list(warm.tasks)[:len(first)]} == first  # at the front of the plan
    assert not warm.wait_first(0.0)
    done = threading.Event()

    def gpu_thread():  # captures back to back, as the engine does while no request is in it
        while warm.run_one():
            pass
        done.set()
    threading.Thread(target=gpu_thread).start()
    assert warm.wait_first(30.0) and warm.first_pending == 0
    done.wait(30.0)
    assert set(captured[:len(first)]) == first and len(captured) == len(keys)


def test_an_engine_closes_without_capturing_the_rest_of_its_plan(tiny_ckpt):
    """A server stopped (SIGTERM) while its graphs are still being captured in the background stops at once, not
    after the whole plan (~60 s of captures on an H100)."""
    import time

    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False)
    eng, captured, started = tts.engine, [], threading.Event()

    def capture(key):
        captured.append(key)
        started.set()
        time.sleep(0.01)
    eng.decoder.capture = capture
    eng.call(lambda: eng.warm.tasks.extend(("decode", (1, 128 + i, False, False)) for i in range(3000))).result()
    assert started.wait(30)
    tts.close()
    assert 0 < len(captured) < 3000 and eng.warm.pending > 0


def test_a_background_warmup_may_wait_for_the_first_graphs_and_checks_how_long(tiny_tts):
    import pytest
    for bad in (-1, 601, "3", True):
        with pytest.raises(ValueError, match="first_graphs_s"):
            tiny_tts.engine.warmup(background=True, first_graphs_s=bad)
    tiny_tts.engine.warmup(background=True, first_graphs_s=3)  # no graphs on the CPU: nothing to wait for
    assert tiny_tts.engine.warm.first_pending == 0
    assert tiny_tts.generate_many(["Still serving."], seed=1, max_new_tokens=20)[0].tokens
