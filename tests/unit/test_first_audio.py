"""First-audio priority: windows that bring a stream its first audio render as a batch of their own, ahead of
other work, and T3 holds its decode steps meanwhile; the audio is the same with the priority on or off."""

import threading
import time

import numpy as np
import pytest

from tests.conftest import check_env_flag

TEXT = "Priority for the first sound a listener hears."


@pytest.fixture
def priority(tiny_tts):
    """Set first_audio_priority; S3Gen may overlap T3 here (overlap_audio on), so only the priority holds decode."""
    before, turns = tiny_tts.config.first_audio_priority, tiny_tts.engine.turns
    overlap = turns.overlap
    turns.overlap = True
    yield lambda on: setattr(tiny_tts.config, "first_audio_priority", on)
    tiny_tts.config.first_audio_priority, turns.overlap = before, overlap


def _spy_first_windows(tiny_tts, monkeypatch, hold_s: float = 0.1) -> list:
    """Record the engine's decode-step count around each batch of first windows; each such batch is slowed by
    `hold_s` so that a decode loop running beside it would be seen (well inside the engine's 0.5 s cap on the
    wait, render included)."""
    worker, stats, seen = tiny_tts.engine.audio, tiny_tts.engine.stats, []
    real = worker._windows

    def spy(todo):
        first = all(r.stream.mel is None for r, *_ in todo)
        before = stats.decode_steps
        if first:
            time.sleep(hold_s)
        real(todo)
        seen.append((first, len(todo), before, stats.decode_steps))
    monkeypatch.setattr(worker, "_windows", spy)
    return seen


def _two_streams(tiny_tts, seeds=(5, 6), tokens=(160, 160), stagger_s: float = 0.0):
    out = [None] * len(seeds)

    def consume(i, handle):
        out[i] = list(handle)
    threads = []
    for i, (seed, n) in enumerate(zip(seeds, tokens)):
        if i and stagger_s:
            time.sleep(stagger_s)
        handle = tiny_tts.stream(TEXT, seed=seed, max_new_tokens=n)
        threads.append(threading.Thread(target=consume, args=(i, handle)))
        threads[-1].start()
    for th in threads:
        th.join()
    return out


def test_decode_waits_while_first_windows_render(tiny_tts, priority, monkeypatch):
    priority(True)
    # The engine's cap on the wait (0.5 s) must not end it here, however slow a busy test machine renders.
    monkeypatch.setattr("cadence.engine.engine.FIRST_AUDIO_HOLD_S", 120.0)
    seen = _spy_first_windows(tiny_tts, monkeypatch)
    _two_streams(tiny_tts)
    firsts = [s for s in seen if s[0]]
    assert firsts and all(before == after for _, _, before, after in firsts)
    assert any(not first for first, *_ in seen)  # later windows were rendered too


def test_without_the_priority_decode_runs_beside_first_windows(tiny_tts, priority, monkeypatch):
    # The check above would pass vacuously if decode never overlapped a render; here it must overlap.
    priority(False)
    seen = _spy_first_windows(tiny_tts, monkeypatch)
    _two_streams(tiny_tts)
    assert any(after > before for first, _, before, after in seen if first)


def _stream_entry(tiny_tts, seed: int):
    from cadence.engine.request import Request, RequestHandle
    from cadence.engine.rng import RequestRNG
    from cadence.engine.state import _Running
    from cadence.engine.streaming import StreamState
    from cadence.sampling_params import SamplingParams
    voice = tiny_tts.voice_or_default(None)
    r = _Running(RequestHandle(Request(TEXT, voice, SamplingParams(seed=seed), stream=True)), [])
    r.stream = StreamState(tiny_tts.voice_cache.get(voice).voice, RequestRNG(seed, tiny_tts.device),
                           prompt_keep=100, history_keep=50)
    return r


def test_taking_turns_no_decode_step_runs_beside_any_render(tiny_tts, monkeypatch):
    before = tiny_tts.config.first_audio_priority
    tiny_tts.config.first_audio_priority = False
    try:
        assert tiny_tts.engine.turns.overlap is False  # the default
        seen = _spy_first_windows(tiny_tts, monkeypatch)
        _two_streams(tiny_tts)
    finally:
        tiny_tts.config.first_audio_priority = before
    assert len(seen) > 2 and all(b == a for _, _, b, a in seen)


def test_a_newcomers_first_window_goes_ahead_of_the_backlog_in_a_batch_of_its_own(tiny_tts, monkeypatch):
    from cadence.engine.audio_worker import AudioWorker
    worker = AudioWorker(tiny_tts.engine)  # its own, idle: this test drives its steps
    try:
        rnd = np.random.default_rng(0)
        tokens = [int(t) for t in rnd.integers(0, 4000, 90)]
        old, new = _stream_entry(tiny_tts, 1), _stream_entry(tiny_tts, 2)
        worker._windows([(old, tokens[:20], False, True)])  # `old` has sent audio; `new` has none yet
        assert old.stream.mel is not None and new.stream.mel is None
        batches = []
        real = worker._windows

        def spy(todo):
            batches.append(([r is new for r, *_ in todo], worker.first.pending))
            real(todo)
        monkeypatch.setattr(worker, "_windows", spy)
        worker.first.add(1)  # as the engine counts `new`'s first window when it hands it over
        worker._file([[(old, tokens[:52], False, False)], [(old, tokens[:84], False, False)],
                      [(new, tokens[:20], False, True)]])
        worker._step()  # the first window alone, first, and the decode gate released once it is rendered
        assert batches == [([True], 1)] and worker.first.pending == 0
        worker._step()  # then one round: `new`'s is not due, `old`'s next window; its last one waits
        assert batches[1] == ([False], 0) and len(worker._backlog[id(old)]) == 1
        worker._step()
        assert len(batches) == 3 and not worker._backlog
    finally:
        worker.close()


def test_the_audio_is_the_same_with_the_priority_on_or_off(tiny_tts, priority):
    priority(True)
    on = _two_streams(tiny_tts, seeds=(11, 12))
    priority(False)
    off = _two_streams(tiny_tts, seeds=(11, 12))
    for a, b in zip(on, off):
        assert a[-1].tokens == b[-1].tokens
        wa, wb = np.concatenate([c.samples for c in a]), np.concatenate([c.samples for c in b])
        assert wa.shape == wb.shape and np.abs(wa - wb).max() < 1e-3


def test_a_stalled_or_queued_first_window_does_not_stop_decode():
    from cadence.engine.audio_worker import FirstAudio
    gate = FirstAudio()
    assert gate.wait(0.01)
    gate.add(2)
    t0 = time.perf_counter()
    assert not gate.wait(0.05) and time.perf_counter() - t0 < 1.0
    threading.Timer(0.05, gate.done, args=(2,)).start()
    assert gate.wait(2.0) and gate.pending == 0
    gate.add(1)
    gate.behind(True)  # the worker is busy with other work: decode goes on meanwhile
    assert gate.wait(5.0)
    gate.behind(False)
    assert not gate.wait(0.01)


def test_the_knob_has_one_name_everywhere(monkeypatch, capsys):
    from cadence.cli import main
    from cadence.cli_parser import build_parser
    from cadence.config import EngineConfig
    from cadence.server.settings import ServerSettings
    with pytest.raises(ValueError, match="first_audio_priority"):
        EngineConfig(first_audio_priority="yes")
    assert ServerSettings.from_env().first_audio_priority is True
    check_env_flag(monkeypatch, "first_audio_priority", "off", False, "sometimes")
    args = build_parser().parse_args(["serve", "--no-first-audio-priority"])
    assert ServerSettings.from_env(first_audio_priority=args.first_audio_priority).first_audio_priority is False
    assert build_parser().parse_args(["bench", "--stream", "--first-audio-priority"]).first_audio_priority is True
    with pytest.raises(ValueError, match="overlap_audio"):
        EngineConfig(overlap_audio=1)
    assert ServerSettings.from_env().overlap_audio is False
    check_env_flag(monkeypatch, "overlap_audio", "on", True, "sometimes")
    assert build_parser().parse_args(["serve", "--overlap-audio"]).overlap_audio is True


def test_a_failing_step_fails_its_stream_and_the_worker_goes_on(tiny_tts, monkeypatch):
    worker = tiny_tts.engine.audio
    real, calls = worker._windows, []

    def broken(todo):
        calls.append(len(todo))
        if len(calls) == 1:
            raise RuntimeError("broken window")
        real(todo)
    monkeypatch.setattr(worker, "_windows", broken)
    eng = tiny_tts.engine
    cancelled, failed, steps = eng.stats.cancelled, eng.stats.failed, eng.stats.decode_steps
    with pytest.raises(RuntimeError, match="broken window"):
        list(tiny_tts.stream(TEXT, seed=1, max_new_tokens=500))
    deadline = time.time() + 10  # the failed stream's slot is freed long before its 500 tokens would end
    while eng.load["running"] and time.time() < deadline:
        time.sleep(0.02)
    assert eng.load["running"] == 0 and eng.stats.decode_steps - steps < 200
    assert eng.stats.failed == failed + 1 and eng.stats.cancelled == cancelled
    monkeypatch.setattr(worker, "_windows", real)
    assert list(tiny_tts.stream(TEXT, seed=1, max_new_tokens=60))[-1].final


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _queue_turns(turns, waiters: list[tuple[str, bool]], clock=None, at=None):
    """Hold `turns`, queue one thread per (name, urgent) in that order (each seen waiting before the next is
    started; with `clock`, queued at the times in `at`), release, and return the order they were served in."""
    order, holding, release = [], threading.Event(), threading.Event()

    def holder():
        with turns.turn():
            holding.set()
            release.wait()

    def waiter(name, urgent):
        with turns.turn(urgent=urgent):
            order.append(name)
    threads = [threading.Thread(target=holder)]
    threads[0].start()
    holding.wait()
    for k, (name, urgent) in enumerate(waiters):
        if clock is not None:
            clock.now = at[k]
        threads.append(threading.Thread(target=waiter, args=(name, urgent)))
        threads[-1].start()
        while turns.waiting < k + 1:  # queued: the order of arrival is fixed before the next one starts
            time.sleep(0.001)
    if clock is not None:
        clock.now = at[-1]
    release.set()
    for th in threads:
        th.join()
    return order


def test_gpu_turns_are_exclusive_and_first_come_first_served():
    from cadence.engine.gpu_turns import GpuTurns
    turns, inside, overlap_seen = GpuTurns(overlap=False), [], []

    def worker(hold):
        with turns.turn():
            inside.append(1)
            overlap_seen.append(len(inside) > 1)
            time.sleep(hold)
            inside.pop()
    threads = [threading.Thread(target=worker, args=(0.01,)) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(overlap_seen) == 6 and not any(overlap_seen)
    assert _queue_turns(GpuTurns(overlap=False), [("a", False), ("b", False), ("c", False)]) == ["a", "b", "c"]
    free = GpuTurns(overlap=True)  # overlap on: no waiting at all
    with free.turn(), free.turn():
        pass


def test_an_urgent_turn_passes_an_ordinary_one_once_and_within_its_patience():
    from cadence.engine.gpu_turns import GpuTurns
    clock = _FakeClock()
    turns = GpuTurns(overlap=False, patience_s=0.25, clock=clock)
    # released 0.1 s after the first ordinary one queued: an urgent one passes each ordinary one, once
    order = _queue_turns(turns, [("a", False), ("u1", True), ("b", False), ("u2", True)], clock, [0.0, 0.01, 0.02,
                                                                                                   0.03, 0.1])
    assert order == ["u1", "a", "u2", "b"]
    order = _queue_turns(turns, [("a", False), ("u1", True), ("u2", True)], clock, [0.5, 0.51, 0.52, 0.6])
    assert order == ["u1", "a", "u2"]  # so windows keep every other turn under a stream of newcomers
    # released once `a` has waited past its patience: `a` goes first, then the urgent one
    order = _queue_turns(turns, [("a", False), ("u", True), ("b", False)], clock, [1.0, 1.01, 1.02, 1.3])
    assert order[:2] == ["a", "u"] and order[2] == "b"


def test_a_newcomers_turns_are_urgent_and_a_sounding_streams_are_not(tiny_tts, monkeypatch):
    """The engine asks for urgent turns while a stream waits for admission or its first window, and the worker
    for its first windows; with first_audio_priority off every turn is ordinary."""
    eng, asked = tiny_tts.engine, []
    real = eng.turns.turn

    def spy(urgent=False):
        asked.append((threading.current_thread().name, urgent))
        return real(urgent=urgent)
    monkeypatch.setattr(eng.turns, "turn", spy)
    list(tiny_tts.stream(TEXT, seed=3, max_new_tokens=120))
    engine_turns = [u for name, u in asked if name == "cadence-engine"]
    audio_turns = [u for name, u in asked if name == "cadence-audio"]
    assert engine_turns[0] is True and engine_turns[-1] is False  # admission urgent; once it sounds, ordinary
    assert audio_turns[0] is True and not any(audio_turns[1:])  # its first window, then ordinary ones
    asked.clear()
    before = tiny_tts.config.first_audio_priority
    tiny_tts.config.first_audio_priority = False
    try:
        list(tiny_tts.stream(TEXT, seed=3, max_new_tokens=120))
    finally:
        tiny_tts.config.first_audio_priority = before
    assert asked and not any(u for _, u in asked)


def test_engine_runs_with_overlap_on_and_off_alike(tiny_ckpt):
    from cadence.tts import TTS
    outs = []
    for overlap in (False, True):
        tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, overlap_audio=overlap)
        try:
            assert tts.engine.turns.overlap is overlap
            outs.append([np.concatenate([c.samples for c in tts.stream(TEXT, seed=31, max_new_tokens=80)]),
                         tts.generate_many([TEXT, TEXT + " Again."], seed=32, max_new_tokens=60)])
        finally:
            tts.close()
    (s0, m0), (s1, m1) = outs
    assert s0.shape == s1.shape and np.abs(s0 - s1).max() < 1e-3
    assert all(a.tokens == b.tokens for a, b in zip(m0, m1))


def test_more_streams_than_slots_all_finish_as_each_alone_with_urgent_turns(tiny_ckpt):
    """Streams waiting for a slot while others play: admissions wait for a free slot (not urgent meanwhile), each
    newcomer's turns go first, and every stream still gets its audio, the same as alone."""
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, max_batch=2, memory_plan="fp32")
    try:
        assert tts.config.first_audio_priority and not tts.engine.turns.overlap
        texts = [f"Stream number {i} waits for its slot." for i in range(5)]
        alone = [np.concatenate([c.samples for c in tts.stream(t, seed=40 + i, max_new_tokens=70)])
                 for i, t in enumerate(texts)]
        handles = [tts.stream(t, seed=40 + i, max_new_tokens=70) for i, t in enumerate(texts)]
        out: list = [None] * len(texts)

        def consume(i):
            out[i] = np.concatenate([c.samples for c in handles[i]])
        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(texts))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        for a, b in zip(alone, out):
            assert b is not None and a.shape == b.shape and np.abs(a - b).max() < 1e-3
    finally:
        tts.close()
