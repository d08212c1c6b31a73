"""The streaming pace model: window arrivals against playback, and the ladder it recommends (numbers, no clocks)."""

import pytest

from cadence.config import DEFAULT_STREAM_WINDOWS, EngineConfig, stream_windows
from cadence.engine.pace import Pace, recommend, simulate, windows_of


def test_windows_follow_the_ladder_and_the_last_size_repeats():
    assert windows_of((16, 32), 100) == [16, 32, 32, 20]
    assert windows_of((16, 16, 32, 64, 96), 40) == [16, 16, 8]


def test_a_fast_machine_plays_the_default_ladder_without_a_gap():
    fast = Pace(prefill_s=0.05, token_s=0.005, window_fixed_s=0.02, window_token_s=0.001)
    run = simulate(DEFAULT_STREAM_WINDOWS, fast, 750)
    assert run.gapless and run.silence_s == 0
    assert run.first_audio_s == pytest.approx(0.05 + 16 * 0.005 + 0.02 + 16 * 0.001)


def test_a_costly_context_starves_small_windows_and_the_recommendation_fixes_it():
    # T3 and the per-token render together are 0.6 of real time, but each window pays 0.5 s for its context:
    # after a 16-token first chunk (0.64 s of audio) the next 16 tokens take 0.74 s to arrive.
    cpu = Pace(prefill_s=0.3, token_s=0.016, window_fixed_s=0.5, window_token_s=0.008)
    assert cpu.realtime_factor == pytest.approx(0.6)
    default = simulate(DEFAULT_STREAM_WINDOWS, cpu, 750)
    assert default.underruns > 0 and default.silence_s > 0
    best = recommend(cpu, stream_s=30)
    assert best.gapless and simulate(best.ladder, cpu, 750).gapless
    assert EngineConfig(stream_windows=best.ladder).stream_windows == best.ladder  # a valid knob value
    # the earliest first audio among ladders without a gap: a smaller first window would run dry
    for first in (16, 32, 48, 64, 96, 128):
        if first < best.ladder[0]:
            assert not any(simulate((first, steady), cpu, 750).gapless for steady in (64, 96, 128, 192, 240))


def test_a_machine_slower_than_real_time_says_how_long_it_keeps_the_listener_waiting():
    slow = Pace(prefill_s=1.0, token_s=0.04, window_fixed_s=2.0, window_token_s=0.1)
    assert slow.realtime_factor > 1
    best = recommend(slow, stream_s=30)
    assert not best.gapless and best.silence_s > 0
    # every other ladder keeps the listener waiting at least as long
    assert best.silence_s <= simulate(DEFAULT_STREAM_WINDOWS, slow, 750).silence_s


@pytest.mark.parametrize("bad", ["", "16,x", "2", "16,300", [], [16] * 9, [16.0], (True,)])
def test_the_window_knob_is_checked_with_its_name(bad):
    with pytest.raises(ValueError, match="stream_windows"):
        stream_windows(bad)
    with pytest.raises(ValueError, match="stream_windows"):
        EngineConfig(stream_windows=bad)


def test_the_window_knob_has_one_name_in_flags_and_the_environment(monkeypatch):
    from cadence.cli_parser import build_parser
    from cadence.server.settings import ServerSettings
    assert stream_windows("24, 48,96") == (24, 48, 96)
    monkeypatch.setenv("CADENCE_STREAM_WINDOWS", "32,64")
    assert ServerSettings.from_env().stream_windows == (32, 64)
    args = build_parser().parse_args(["serve", "--stream-windows", "48,96"])
    assert ServerSettings.from_env(stream_windows=args.stream_windows).stream_windows == (48, 96)
    monkeypatch.setenv("CADENCE_STREAM_WINDOWS", "soon")
    with pytest.raises(ValueError, match="CADENCE_STREAM_WINDOWS"):
        ServerSettings.from_env()


def test_pace_refuses_nonsense():
    with pytest.raises(ValueError, match="token_s"):
        Pace(prefill_s=0, token_s=float("nan"), window_fixed_s=0, window_token_s=0)


def test_the_engine_hands_over_windows_by_its_ladder(tiny_ckpt):
    from cadence.engine.request import Request
    from cadence.tts import TTS
    chunks = {}
    for ladder in ((16,), (64,)):
        tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, memory_plan="fp32", stream_windows=ladder)
        handle = tts.submit(Request("Hello there, a test of the windows.", None, tts.params(seed=2, max_new_tokens=128),
                                    speech_tokens_only=True, ignore_eos=True, stream=True))
        chunks[ladder] = len([c for c in handle if c.samples.size])
        tts.close()
    # 128 tokens: eight 16-token windows against two of 64 (each window one chunk, the last flushed at the end)
    assert chunks[(16,)] >= 7 and chunks[(64,)] <= 3, chunks


def test_a_bad_window_flag_is_one_line_and_exit_code_2(capsys):
    from cadence.cli import main
    assert main(["serve", "--stream-windows", "2", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stream_windows" in err[0] and err[0].startswith("cadence: error:")
