import subprocess
import sys
import pytest

import soundfile as sf


def run(*args):
    return subprocess.run([sys.executable, "-m", "cadence.cli", *args], capture_output=True, text=True, timeout=300)


def test_say_writes_a_24k_wav(tiny_ckpt, tmp_path):
    out = tmp_path / "out.wav"
    r = run("say", "Hello there.", "-o", str(out), "--model", str(tiny_ckpt), "--device", "cpu",
            "--max-new-tokens", "20", "--seed", "1", "--no-watermark")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1 and info.frames > 0


def test_bad_inputs_exit_2_with_one_line(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    cases = [
        ("say", "Hi", "-o", str(tmp_path / "o.wav"), "--model", str(tmp_path / "nope")),
        ("say", "Hi", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_ckpt), "--voice-audio", str(bad)),
        ("say", "Hi", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_ckpt), "--temperature", "0"),
        ("say", "Hi", "-o", str(tmp_path / "o.mp3"), "--model", str(tiny_ckpt)),
    ]
    for args in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("cadence: error:"), r.stderr


def test_serve_rejects_bad_settings_with_one_line(capsys):
    from cadence.cli import main
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "port must be in 1..65535" in err[0]


@pytest.mark.parametrize("flags, message", [(["--max-batch", "0"], "max_batch must be an integer in [1, 1024]"),
                                            (["--dtype", "int4"], "unknown dtype 'int4'"),
                                            (["--vram-budget", "lots"], "cannot read a memory size from 'lots'"),
                                            (["--encode-workers", "-1"], "encode_workers must be >= 0"),
                                            (["--kv-slot-len", "10"], "kv_slot_len must be an integer in [64, 8192]"),
                                            (["--voice-cache-mb", "0"], "voice_cache_mb must be a positive integer"),
                                            (["--vocoder-dtype", "int4"], "unknown dtype 'int4'")])
def test_serve_takes_the_library_knobs_and_checks_them_before_loading(capsys, flags, message):
    from cadence.cli import main
    assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_serve_settings_flow_into_the_app_settings():
    from cadence.server.settings import ServerSettings
    s = ServerSettings.from_env(max_batch=12, dtype="float16", vram_budget="2GB", encode_workers=3, kv_slot_len=1024,
                                vocoder_dtype="bfloat16", prepare_device="cpu", voice_cache_mb=64, enforce_eager=True)
    assert (s.max_batch, s.dtype, s.vram_budget, s.encode_workers) == (12, "float16", "2GB", 3)
    assert (s.kv_slot_len, s.vocoder_dtype, s.prepare_device, s.voice_cache_mb, s.enforce_eager) == (
        1024, "bfloat16", "cpu", 64, True)
    assert 2 <= ServerSettings().encode_workers <= 4  # 0: a quarter of the cores, 2 to 4
    from cadence.server.settings import default_encode_workers
    assert [default_encode_workers(c) for c in (1, 2, 8, 12, 16, 64)] == [2, 2, 2, 3, 4, 4]


def test_cli_refusals_before_any_work(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "cadence.cli", *a], capture_output=True, text=True)  # noqa: E731
    (tmp_path / "dir.wav").mkdir()
    cases = [(("say", "hi", "-o", str(tmp_path / "dir.wav")), "is a directory"),
             (("bench", "--device", "cuda"), "no CUDA device"),
             (("bench", "--speeds", "0.5,9", "--device", "cpu"), "speed must be a number in [0.25, 4.0]"),
             (("bench", "--speeds", "fast", "--device", "cpu"), "--speeds must be a comma list")]
    for args, fragment in cases:
        r = run(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, r.stderr)
    assert not list(tmp_path.glob("*.tmp"))
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("cadence ")


def test_library_refuses_empty_text_and_takes_voice_names(tiny_tts, tmp_path):
    import numpy as np

    from cadence.random_checkpoint import synthetic_voice
    from cadence.audio.io import to_mono
    with pytest.raises(ValueError, match="text is empty"):
        tiny_tts.generate("  ")
    with pytest.raises(ValueError, match="no voice named 'bob'"):
        tiny_tts.generate("hi", voice="bob", max_new_tokens=5)
    with pytest.raises(ValueError, match="voice must be a Voice"):
        tiny_tts.generate("hi", voice=3, max_new_tokens=5)
    assert tiny_tts.generate("hi", voice="default", max_new_tokens=5, seed=1).samples.size > 0
    stereo = np.stack([synthetic_voice(seconds=1.0)] * 2)  # (channels, frames)
    assert to_mono(stereo).shape == (24000,)


def test_an_unset_max_new_tokens_fits_a_small_checkpoint(tiny_tts):
    assert tiny_tts.t3.cfg.max_speech_tokens == 512
    assert tiny_tts.params().max_new_tokens == 512 and tiny_tts.params(max_new_tokens=20).max_new_tokens == 20
    with pytest.raises(ValueError, match="exceeds this model's 512"):  # set explicitly: refused, not clamped
        tiny_tts.generate("hi", max_new_tokens=1000)


def test_audio_and_model_paths_are_named_for_what_they_are(tmp_path, tiny_ckpt):
    from cadence.audio.encode import encode_all
    from cadence.audio.io import read_audio
    from cadence.random_checkpoint import synthetic_voice
    run = lambda *a: subprocess.run([sys.executable, "-m", "cadence.cli", *a], capture_output=True, text=True)  # noqa: E731
    (tmp_path / "somefile").write_text("x")
    r = run("say", "hi", "-o", str(tmp_path / "o.wav"), "--model", str(tmp_path / "somefile"))
    assert r.returncode == 2 and "is a file; a checkpoint is a directory" in r.stderr
    r = run("say", "hi", "-o", str(tmp_path / "o.wav"), "--model", str(tiny_ckpt), "--voice-audio", str(tmp_path))
    assert r.returncode == 2 and "is a directory, not an audio file" in r.stderr
    aac = tmp_path / "ref.aac"  # ADTS AAC: libsndfile cannot read it, FFmpeg can
    aac.write_bytes(encode_all(synthetic_voice(seconds=3.0), "aac", 24000))
    wav, sr = read_audio(aac)
    assert sr == 24000 and abs(wav.size / sr - 3.0) < 0.2
    wav, _ = read_audio(aac, max_seconds=1.0)
    assert wav.size == 24000


def test_more_refusals_name_the_command_and_the_problem(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "cadence.cli", *a], capture_output=True, text=True)  # noqa: E731
    (tmp_path / "afile").write_text("x")
    r = run("checkpoint", "random", str(tmp_path / "afile"), "--tiny")
    assert r.returncode == 2 and "is a file; name a directory" in r.stderr and "Traceback" not in r.stderr
    r = run("say", "hi", "-o", str(tmp_path / "o.wav"), "--bogus")
    assert r.returncode == 2 and r.stderr.startswith("usage: cadence say") and "--bogus" in r.stderr
    r = run("voices", "list", "--library", str(tmp_path / "lib"))  # --library after the action, as say takes it
    assert r.returncode == 0 and "NAME" in r.stdout
    (tmp_path / "lib" / "adir.voice").mkdir(parents=True)
    r = run("voices", "--library", str(tmp_path / "lib"), "rm", "adir")
    assert r.returncode == 2 and "no voice named 'adir'" in r.stderr


def test_default_is_not_a_library_name_and_conds_imports_are_usable(tiny_tts, tmp_path):
    from cadence.voices.library import VoiceError, VoiceLibrary
    from cadence.random_checkpoint import synthetic_voice
    lib = tiny_tts.library(tmp_path / "v")
    with pytest.raises(VoiceError, match="'default' names the checkpoint's built-in voice"):
        lib.add("Default", synthetic_voice(seconds=3.0), sample_rate=24000)
    conds = tmp_path / "conds.pt"
    tiny_tts.default_voice.save_conds_pt(conds)
    VoiceLibrary(tmp_path / "v").import_conds(conds, "imported")  # as `cadence voices import` does: no model bound
    v = lib.get("imported")  # taken as prepared for this checkpoint: usable, not refused as foreign
    assert v.t3_prompt_tokens.shape == tiny_tts.default_voice.t3_prompt_tokens.shape
    out = lib.export("imported", tmp_path)
    assert out == tmp_path / "imported.voice" and out.is_file()


def test_stdin_text_and_stdout_audio(tiny_ckpt, tmp_path):
    import io
    for extra, stdin in ((["Hello there."], None), (["--file", "-"], "Hello there. A second sentence.")):
        r = subprocess.run([sys.executable, "-m", "cadence.cli", "say", *extra, "-o", "-", "--model", str(tiny_ckpt),
                            "--max-new-tokens", "12", "--seed", "1", "--no-watermark"],
                           input=stdin.encode() if stdin else None, capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        wav, sr = sf.read(io.BytesIO(r.stdout))
        assert sr == 24000 and wav.size > 0 and b"wrote stdout" in r.stderr


def test_say_takes_the_engine_options(tiny_ckpt, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cadence.cli", "say", "Hi.", "-o", str(tmp_path / "o.wav"), "--model",
                        str(tiny_ckpt), "--max-new-tokens", "8", "--seed", "1", "--no-watermark", "--dtype", "float32",
                        "--vocoder-dtype", "float32", "--prepare-device", "cpu", "--eager", "--no-compile"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "cadence.cli", "say", "Hi.", "-o", str(tmp_path / "o.wav"), "--model",
                        str(tiny_ckpt), "--dtype", "int4"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown dtype 'int4'" in r.stderr


def test_device_has_one_meaning_on_every_command():
    """--device: the same choices, the same help and auto (CUDA if present) on every command that takes it."""
    from cadence.cli_parser import build_parser
    parser = build_parser()
    seen = []

    def walk(p):
        for action in p._actions:
            if "--device" in getattr(action, "option_strings", ()):
                seen.append((p.prog, action.default, action.help))
            for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else ():
                walk(sub)
    walk(parser)
    progs = {prog for prog, _, _ in seen}
    assert {"cadence say", "cadence bench", "cadence serve", "cadence voices add"} <= progs, progs
    for prog, default, help_text in seen:
        assert default in ("auto", None), (prog, default)  # serve: None = CADENCE_DEVICE or auto
        assert help_text.startswith("cpu, cuda, cuda:N, mps or auto (CUDA if present"), (prog, help_text)


def test_bench_plot_draws_the_readme_chart_from_raw_results_and_refuses_other_files(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "cadence.cli", *a], capture_output=True, text=True)  # noqa: E731
    from pathlib import Path
    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    raw = [str(results / "2026-11-26-h200/benchmarks.json"), str(results / "2026-12-02-h200/turbo_bench.json")]
    out = tmp_path / "chart.svg"
    r = run("bench", "plot", "--results", *raw, "--plot", str(out))
    assert r.returncode == 0, r.stderr
    svg = out.read_text()
    assert svg.startswith("<svg") and svg.count('fill="#2b6cb0"') == 5  # the legend + 2 results x 2 panels
    assert ">0.054<" in svg and ">0.490<" in svg and ">1621<" in svg  # the medians and peaks of those files
    for bad, fragment in (([str(results.parents[1] / "README.md")], "not JSON"),
                          ([str(results / "2026-12-02-h200/serve_turbo_mp3_wm-cpu.json")],
                           "not a `cadence bench --reference` result"),
                          (["nope.json"], "no such file")):
        r = run("bench", "plot", "--results", *bad, "--plot", str(out))
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], (bad, r.stderr)


def test_an_unreachable_hub_is_one_line(tmp_path):
    """A hub id on a machine that cannot reach the hub: one line naming the model and the way out, none of the
    hub library's retry warnings (an endpoint on a closed loopback port: refused at once, no outside traffic)."""
    env = {**__import__("os").environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "0"}
    r = subprocess.run([sys.executable, "-m", "cadence.cli", "say", "Hi", "-o", str(tmp_path / "o.wav"), "--model",
                        "ResembleAI/chatterbox"], capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "could not download 'ResembleAI/chatterbox'" in lines[0] and "local directory" in lines[0]


# EngineConfig fields that a command has no use for, and why; every other field is a flag of that command.
NOT_ON = {
    "say": {"stream_prompt_s": "say does not stream", "stream_history_s": "say does not stream",
            "stream_windows": "say does not stream",
            "first_audio_priority": "say does not stream", "overlap_audio": "say does not stream",
            "eos_check_every": "a tuning constant of the decode loop, set in Python"},
    "serve": {"eos_check_every": "a tuning constant of the decode loop, set in Python"},
    "bench": {"eos_check_every": "a tuning constant of the decode loop, set in Python"},
}
FLAG_OF = {"enforce_eager": "--eager"}


def test_every_engine_option_is_a_flag_of_every_command_it_applies_to():
    from dataclasses import fields

    from cadence.cli_parser import build_parser
    from cadence.config import EngineConfig
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for command, skipped in NOT_ON.items():
        flags = {s for a in subs[command]._actions for s in a.option_strings}
        for f in fields(EngineConfig):
            flag = FLAG_OF.get(f.name, "--" + f.name.replace("_", "-"))
            assert f.name in skipped or flag in flags, f"cadence {command} lacks {flag}"
