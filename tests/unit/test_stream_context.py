"""Bounded streaming context (EngineConfig.stream_prompt_s / stream_history_s): a window that keeps the end of
the voice prompt and the most recent audio sent is exactly the window of a voice whose prompt is that context,
each frame keeping its own noise; and its size no longer grows with the stream."""

from dataclasses import replace

import pytest
import torch

from cadence.config import EngineConfig
from cadence.engine.rng import RequestRNG
from cadence.engine.streaming import TOKEN_BUCKET, StreamState, _flow_windows

TOKENS = list(range(300, 380))  # generated speech tokens, any valid ids


def _voice(tts, surplus: bool):
    v = tts.default_voice
    if surplus:  # a 9.98 s prompt: 499 frames for 249 tokens, the reference's surplus frame
        v = replace(v, prompt_tokens=v.prompt_tokens[:, :249], prompt_feat=v.prompt_feat[:, :499])
    return v


def _window(tts, st: StreamState, tokens: list[int]) -> torch.Tensor:
    before = 0 if st.mel is None else st.mel.shape[-1]
    _flow_windows(tts.audio_runner, [(st, tokens, False)])
    return st.mel[..., before:]


@pytest.mark.parametrize("surplus", [False, True])
def test_a_trimmed_prompt_is_the_window_of_the_trimmed_voice(tiny_tts, surplus):
    v = _voice(tiny_tts, surplus)
    Tp, k = v.prompt_tokens.shape[1], 40
    noise = torch.randn(1, 80, 2 * (Tp + 60), generator=torch.Generator().manual_seed(1))  # no new draws
    kept = _window(tiny_tts, StreamState(v, RequestRNG(0, "cpu"), noise=noise.clone(), prompt_keep=k), TOKENS[:19])
    short = replace(v, prompt_tokens=v.prompt_tokens[:, Tp - k:], prompt_feat=v.prompt_feat[:, 2 * (Tp - k):])
    alone = _window(tiny_tts, StreamState(short, RequestRNG(0, "cpu"), noise=noise[..., 2 * (Tp - k):].clone()),
                    TOKENS[:19])
    assert kept.shape == alone.shape and kept.shape[-1] == 32 - int(surplus)
    torch.testing.assert_close(kept, alone)


@pytest.mark.parametrize("surplus", [False, True])
def test_a_bounded_history_is_the_window_of_a_voice_made_of_that_context(tiny_tts, surplus):
    v = _voice(tiny_tts, surplus)
    Tp, P, kp, h = v.prompt_tokens.shape[1], v.prompt_feat.shape[1], 40, 5
    d = P - 2 * Tp
    noise = torch.randn(1, 80, 2 * (Tp + 80), generator=torch.Generator().manual_seed(2))
    st = StreamState(v, RequestRNG(0, "cpu"), noise=noise.clone(), prompt_keep=kp, history_keep=h)
    _window(tiny_tts, st, TOKENS[:19])
    E = st.mel.shape[-1]
    s = (d + E) // 2  # generated tokens whose frames were all sent
    g0 = s - h
    second = _window(tiny_tts, st, TOKENS[:51])

    sent = torch.cat((v.prompt_feat[0, 2 * Tp:].t(), st.mel[0, :, :E].to(v.prompt_feat.dtype)), dim=-1)
    context = replace(v, prompt_tokens=torch.cat((v.prompt_tokens[:, Tp - kp:], torch.tensor([TOKENS[g0:s]])), dim=1),
                      prompt_feat=torch.cat((v.prompt_feat[0, 2 * (Tp - kp): 2 * Tp].t(), sent[:, 2 * g0: 2 * s]),
                                            dim=-1).t()[None].contiguous())
    context_noise = torch.cat((noise[..., 2 * (Tp - kp): 2 * Tp], noise[..., 2 * Tp + 2 * g0:]), dim=-1)
    alone = _window(tiny_tts, StreamState(context, RequestRNG(0, "cpu"), noise=context_noise), TOKENS[s:51])
    assert second.shape == alone.shape and second.shape[-1] == 64
    torch.testing.assert_close(second, alone)


def test_bounded_windows_stay_the_same_size_as_the_stream_grows(tiny_tts, monkeypatch):
    sizes = []
    encode = tiny_tts.s3gen.flow.encode
    monkeypatch.setattr(tiny_tts.s3gen.flow, "encode", lambda tok, *a, **k: (sizes.append(tok.shape[1]),
                                                                                encode(tok, *a, **k))[1])
    v = tiny_tts.default_voice
    st = StreamState(v, RequestRNG(0, "cpu"), prompt_keep=20, history_keep=10)
    full = StreamState(v, RequestRNG(0, "cpu"))
    for n in range(16, 81, 16):
        _flow_windows(tiny_tts.audio_runner, [(st, TOKENS[:n], False)])
    bounded, sizes[:] = sizes[:], []
    for n in range(16, 81, 16):
        _flow_windows(tiny_tts.audio_runner, [(full, TOKENS[:n], False)])
    up = lambda n: -(-n // TOKEN_BUCKET) * TOKEN_BUCKET  # noqa: E731 - windows are padded to a bucket
    assert max(bounded) <= up(20 + 10 + 16 + 3) and bounded[-1] == bounded[-2]  # prompt + history + new + lookahead
    assert sizes == [up(250 + n) for n in range(16, 81, 16)]  # unbounded: everything so far
    assert st.mel.shape == full.mel.shape  # the same frames come out, only their context differs


@pytest.mark.parametrize("value", [0, 0.1, -1, 61, "4", True])
def test_stream_context_must_be_seconds_or_none(value):
    with pytest.raises(ValueError, match="stream_prompt_s"):
        EngineConfig(stream_prompt_s=value)
    assert EngineConfig(stream_prompt_s=None, stream_history_s=3).stream_context_tokens() == (None, 75)


def test_server_settings_and_flags_take_all_for_no_limit(monkeypatch):
    from cadence.cli_parser import build_parser
    from cadence.server.settings import ServerSettings
    monkeypatch.setenv("CADENCE_STREAM_PROMPT_S", "all")
    monkeypatch.setenv("CADENCE_STREAM_HISTORY_S", "1.5")
    s = ServerSettings.from_env()
    assert s.stream_prompt_s is None and s.stream_history_s == 1.5
    args = build_parser().parse_args(["serve", "--stream-prompt-s", "all", "--stream-history-s", "3"])
    s = ServerSettings.from_env(stream_prompt_s=args.stream_prompt_s, stream_history_s=args.stream_history_s)
    assert s.stream_prompt_s is None and s.stream_history_s == 3.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--stream-prompt-s", "soon"])


def test_a_bad_stream_context_flag_is_one_line_and_exit_code_2(capsys):
    from cadence.cli import main
    assert main(["serve", "--stream-prompt-s", "0", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stream_prompt_s" in err[0] and err[0].startswith("cadence: error:")


def test_a_bad_environment_setting_names_its_variable(monkeypatch):
    from cadence.server.settings import ServerSettings
    monkeypatch.setenv("CADENCE_STREAM_HISTORY_S", "soon")
    with pytest.raises(ValueError, match="CADENCE_STREAM_HISTORY_S='soon'"):
        ServerSettings.from_env()
