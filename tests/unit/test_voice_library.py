import multiprocessing as mp
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from cadence.voices.cache import VoiceCache
from cadence.voices.library import VoiceError, VoiceLibrary, validate_name
from cadence.voices.store import VoiceFileError, load_voice
from cadence.voices.voice import Voice


@pytest.fixture
def lib(tiny_tts, tmp_path):
    return tiny_tts.library(tmp_path / "voices")


def _wav(seed=0, seconds=3.0):
    from cadence.random_checkpoint import synthetic_voice
    return synthetic_voice(seconds=seconds, sr=24000, seed=seed)


def _fake_voice(seed: int) -> Voice:
    g = torch.Generator().manual_seed(seed)
    return Voice(speaker_emb=torch.randn(1, 256, generator=g), t3_prompt_tokens=torch.randint(0, 6561, (1, 20), generator=g),
                 prompt_tokens=torch.randint(0, 6561, (1, 30), generator=g), prompt_feat=torch.randn(1, 60, 80, generator=g),
                 xvector=torch.randn(1, 192, generator=g), exaggeration=0.5)


def test_round_trip_gives_bit_identical_audio(tiny_tts, lib, ref_wav_path):
    # A 16-bit 24 kHz recording survives the library's normalisation exactly, so the stored voice is the
    # freshly prepared one, bit for bit; a prepared voice stored as tensors round-trips exactly too.
    fresh = tiny_tts.prepare_voice(str(ref_wav_path))
    lib.add("alice", str(ref_wav_path))
    lib.add_voice("alice-tensors", fresh)
    for stored in (lib.get("alice"), lib.get("alice-tensors")):
        for k, t in fresh.tensors().items():
            assert torch.equal(t, stored.tensors()[k]), k
        a = tiny_tts.generate("Hello there.", voice=fresh, seed=4, max_new_tokens=16)
        b = tiny_tts.generate("Hello there.", voice=stored, seed=4, max_new_tokens=16)
        assert np.array_equal(a.samples, b.samples)


def test_exaggeration_is_a_request_knob(tiny_tts, lib):
    lib.add("calm", _wav(), sample_rate=24000, exaggeration=0.3)
    v = lib.get("calm")
    assert v.exaggeration == pytest.approx(0.3)
    base = tiny_tts.generate("Hi.", voice=v, seed=1, max_new_tokens=12)
    same = tiny_tts.generate("Hi.", voice=v, seed=1, max_new_tokens=12, exaggeration=0.3)
    other = tiny_tts.generate("Hi.", voice=v, seed=1, max_new_tokens=12, exaggeration=1.2)
    assert base.tokens == same.tokens and base.tokens != other.tokens


def test_same_audio_prepares_once(tiny_tts, tmp_path):
    calls = []
    lib = VoiceLibrary(tmp_path / "v", fingerprint=tiny_tts.fingerprint,
                       preparer=lambda w, sr, ex: calls.append(1) or tiny_tts.prepare_voice(w, sample_rate=sr, exaggeration=ex))
    lib.add("a", _wav(), sample_rate=24000)
    lib.add("b", _wav(), sample_rate=24000, exaggeration=0.9)
    lib.add("c", _wav(seed=5), sample_rate=24000)
    assert len(calls) == 2
    assert torch.equal(lib.get("a").xvector, lib.get("b").xvector) and lib.get("b").exaggeration == pytest.approx(0.9)


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "x" * 65, "tab\there", "a\\b", 3])
def test_bad_names_are_refused(name):
    with pytest.raises(VoiceError):
        validate_name(name)


def test_names_are_unicode_normalised():
    assert validate_name("  Cafe\u0301  ") == "Caf\u00e9"


def test_rename_remove_export_import(lib, tmp_path):
    lib.add_voice("one", _fake_voice(1))
    lib.rename("one", "two")
    assert "two" in lib and "one" not in lib
    with pytest.raises(VoiceError, match="already exists"):
        lib.add_voice("two", _fake_voice(2))
    out = lib.export("two", tmp_path / "two.voice")
    lib.import_file(out, name="three")
    assert torch.equal(lib.get("three").xvector, lib.get("two").xvector)
    lib.remove("two")
    with pytest.raises(VoiceError, match="no voice named"):
        lib.get("two")


def test_corrupt_file_is_named_and_isolated(lib):
    lib.add_voice("good", _fake_voice(1))
    lib.add_voice("bad", _fake_voice(2))
    p = lib.path("bad")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(VoiceFileError, match="bad.voice"):
        lib.get("bad")
    infos, errors = lib.list()
    assert [i.name for i in infos] == ["good"] and len(errors) == 1 and "bad.voice" in errors[0]


def test_other_checkpoint_is_reprepared_or_refused(tiny_tts, tmp_path):
    root = tmp_path / "v"
    other = VoiceLibrary(root, fingerprint="f" * 64, preparer=lambda w, sr, ex: tiny_tts.prepare_voice(w, sample_rate=sr))
    other.add("with_audio", _wav(), sample_rate=24000)
    other.add_voice("tensors_only", _fake_voice(3))
    lib = tiny_tts.library(root)
    v = lib.get("with_audio")
    assert v.meta["checkpoint"] == tiny_tts.fingerprint
    with pytest.raises(VoiceError, match="another checkpoint"):
        lib.get("tensors_only")


def test_import_reference_conds(tiny_tts, lib, tmp_path):
    v = tiny_tts.prepare_voice(_wav(), sample_rate=24000, exaggeration=0.7)
    v.save_conds_pt(tmp_path / "conds.pt")
    got = lib.import_conds(tmp_path / "conds.pt", "imported")
    for k, t in v.tensors().items():
        assert torch.equal(t, lib.get("imported").tensors()[k])
    assert got.exaggeration == pytest.approx(0.7)


def test_default_voice_by_name(tiny_tts, lib):
    assert tiny_tts.voice("default", lib) is tiny_tts.default_voice


def _writer(root, start):
    lib = VoiceLibrary(root)
    for i in range(start, start + 5):
        lib.add_voice(f"v{i}", _fake_voice(i))


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 5)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    infos, errors = VoiceLibrary(tmp_path).list()
    assert len(infos) == 20 and not errors


def test_killed_writer_leaves_the_old_version(tmp_path):
    lib = VoiceLibrary(tmp_path)
    lib.add_voice("keep", _fake_voice(1))
    before = lib.path("keep").read_bytes()
    code = ("import os, time, sys\n"
            "from tests.unit.test_voice_library import _fake_voice\n"
            "from cadence.voices.library import VoiceLibrary\n"
            "os.replace = lambda *a: (print('writing', flush=True), time.sleep(60))\n"
            f"VoiceLibrary({str(tmp_path)!r}).add_voice('keep', _fake_voice(2), overwrite=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert p.stdout.readline().strip() == "writing"  # the new file is written, not yet committed
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert lib.path("keep").read_bytes() == before
    assert torch.equal(lib.get("keep").xvector, _fake_voice(1).xvector)
    assert [i.name for i in lib.list()[0]] == ["keep"]


def test_voice_cache_is_bounded_and_switching_is_free():
    cache = VoiceCache(torch.device("cpu"), max_bytes=3 * _fake_voice(0).nbytes + 10)
    voices = [_fake_voice(i) for i in range(5)]
    first = cache.get(voices[0])
    assert cache.get(voices[0]) is first
    for v in voices[1:]:
        cache.get(v)
    assert len(cache) == 3 and cache.nbytes <= cache.max_bytes


def test_voice_file_is_small(lib):
    lib.add_voice("small", _fake_voice(1))
    assert lib.path("small").stat().st_size < 100_000
    v = load_voice(lib.path("small"))
    assert v.nbytes < 1_000_000


def test_cli_voices(tiny_ckpt, tmp_path, ref_wav_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cadence.cli", "voices", "--library", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=300)
    r = run("add", "alice", str(ref_wav_path), "--model", str(tiny_ckpt), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "alice" in run("list").stdout
    for bad in (run("add", "../x", str(ref_wav_path), "--model", str(tiny_ckpt)), run("rm", "nobody"),
                run("add", "zed", str(tmp_path / "missing.wav"), "--model", str(tiny_ckpt), "--device", "cpu")):
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert run("rename", "alice", "bob").returncode == 0
    assert run("export", "bob", str(tmp_path / "b.voice")).returncode == 0
    assert run("import", str(tmp_path / "b.voice"), "--name", "carol").returncode == 0
    assert run("rm", "bob").returncode == 0
    assert run("show", "carol").returncode == 0


def test_voice_bench_runs_and_stays_bounded(tiny_ckpt):
    from cadence.bench.voices import bench_voices, markdown
    lines = []
    res = bench_voices(str(tiny_ckpt), "cpu", n_store=12, n_use=6, tokens=4, voice_cache_mb=1, progress=lines.append)
    # it says what it is doing as it goes: each stage, and the long ones every tenth
    assert lines[0].startswith("loaded ") and "storing voices: 0/12" in lines and "storing voices: 11/12" in lines
    assert "generating with stored voices: 5/6" in lines and lines[-1].startswith("switching")
    assert res["disk_bytes_tensors_only"] < res["disk_bytes_with_source_audio"]
    assert res["voice_cache_used_mb"] <= 1.0
    assert "| switch between cached voices |" in markdown(res)


def test_the_same_checkpoint_written_twice_has_one_fingerprint(tmp_path):
    from cadence.checkpoint import fingerprint
    from cadence.random_checkpoint import make_random_checkpoint
    a = make_random_checkpoint(tmp_path / "a", seed=0, tiny=True)
    b = make_random_checkpoint(tmp_path / "b", seed=0, tiny=True)  # safetensors orders its metadata at random
    c = make_random_checkpoint(tmp_path / "c", seed=1, tiny=True)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_voice_files_and_random_checkpoints_are_readable_by_other_users(tmp_path, lib):
    import stat

    from cadence.random_checkpoint import make_random_checkpoint
    umask = os.umask(0o022)
    try:
        ck = make_random_checkpoint(tmp_path / "ck", seed=0, tiny=True)
        lib.add("shared", _wav(), sample_rate=24000)
        files = [ck / "ve.safetensors", ck / "t3_cfg.safetensors", ck / "s3gen.safetensors", lib.path("shared")]
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files), [oct(f.stat().st_mode) for f in files]
    finally:
        os.umask(umask)


def test_a_random_checkpoint_that_fails_midway_leaves_nothing_that_looks_whole(tmp_path, monkeypatch):
    """Its files move into place only once all are written: a failure (here: in the default voice, written
    last) leaves no directory a later run or script would take for a checkpoint, and no temporary one."""
    from cadence import random_checkpoint as rc

    def broken(out):
        raise RuntimeError("no pyloudnorm")
    monkeypatch.setattr(rc, "_write_default_voice", broken)
    for make in (rc.make_random_checkpoint, rc.make_random_turbo_checkpoint):
        with pytest.raises(RuntimeError, match="pyloudnorm"):
            make(tmp_path / "ck", tiny=True)
        assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    out = rc.make_random_checkpoint(tmp_path / "ck", tiny=True)
    assert (out / "conds.pt").is_file() and (out / "ve.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert oct((out / "tokenizer.json").stat().st_mode & 0o044) == oct(0o044)  # readable by all


def test_an_unset_exaggeration_takes_the_voices_stored_one(tiny_tts):
    """A voice stored with exaggeration 0.9 is spoken at 0.9 unless a request sets one: the family's defaults
    hold no exaggeration, so `TTS.params()` (the server's and the CLI's path) leaves it unset."""
    from cadence.random_checkpoint import synthetic_voice
    voice = tiny_tts.prepare_voice(synthetic_voice(seconds=3.0, seed=4), sample_rate=24000, exaggeration=0.9)
    unset = tiny_tts.params()
    assert unset.exaggeration is None
    text = "Stored emotion."
    stored = tiny_tts.prefill(text, voice, unset)
    assert torch.equal(stored, tiny_tts.prefill(text, voice, tiny_tts.params(exaggeration=0.9)))
    assert not torch.equal(stored, tiny_tts.prefill(text, voice, tiny_tts.params(exaggeration=0.5)))
