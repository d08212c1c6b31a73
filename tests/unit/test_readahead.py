"""`cadence serve`'s read-ahead of the files its start reads (`cadence.readahead`): which files, in which order,
within which bound, and that a missing or unreadable one is skipped."""

import os

import pytest

from cadence import readahead

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux-only")


def _file(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def test_a_local_checkpoints_files_largest_first(tmp_path):
    _file(tmp_path / "ve.safetensors", 10)
    _file(tmp_path / "t3_cfg.safetensors", 300)
    _file(tmp_path / "s3gen.safetensors", 200)
    (tmp_path / "sub").mkdir()  # not a file: not read
    assert [p.name for p in readahead.checkpoint_files(str(tmp_path))] == \
        ["t3_cfg.safetensors", "s3gen.safetensors", "ve.safetensors"]
    assert readahead.checkpoint_files(str(tmp_path / "missing")) == []


def test_a_hub_ids_files_come_from_the_snapshot_refs_main_names(tmp_path):
    repo = tmp_path / "hub" / "models--ResembleAI--chatterbox"
    blob = _file(repo / "blobs" / "abc", 50)
    (repo / "snapshots" / "old").mkdir(parents=True)
    _file(repo / "snapshots" / "old" / "stale.safetensors", 5)
    (repo / "snapshots" / "r1").mkdir()
    (repo / "snapshots" / "r1" / "t3_cfg.safetensors").symlink_to(blob)  # the hub cache's layout
    _file(repo / "refs" / "main", 0).write_text("r1\n")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    assert [p.name for p in readahead.checkpoint_files("ResembleAI/chatterbox", env)] == ["t3_cfg.safetensors"]
    assert readahead.checkpoint_files("ResembleAI/chatterbox-turbo", env) == []  # not downloaded: nothing
    assert readahead.hub_snapshot("ResembleAI/chatterbox", {"HF_HOME": str(tmp_path / "none")}) is None


def test_hints_follow_the_order_skip_duplicates_and_missing_files_and_stop_at_the_budget(tmp_path, monkeypatch):
    a, b, c = _file(tmp_path / "a", 100), _file(tmp_path / "b", 100), _file(tmp_path / "c", 100)
    (tmp_path / "link").symlink_to(a)
    hinted = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, off, n, advice: (hinted.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                    real(fd, off, n, advice))[1])
    assert readahead.hint([a, tmp_path / "missing", tmp_path / "link", b, c], budget=250) == 200
    assert hinted == [str(a), str(b)]  # the link is a, already hinted; c would pass the budget


def test_the_libraries_are_found_without_importing_them():
    early, late = readahead.library_files()
    assert all(p.name.startswith("lib") for p in early)
    assert all(isinstance(p, os.PathLike) for p in late)


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n")
    assert readahead.available_bytes(str(meminfo)) == 1000 * 1024
    assert readahead.available_bytes(str(tmp_path / "none")) is None


def test_a_gpu_serve_command_starts_the_read_ahead_of_its_checkpoint(tmp_path, monkeypatch):
    from cadence import early_start

    started = []
    monkeypatch.setattr(early_start, "gpu_likely", lambda: True)
    monkeypatch.setattr(readahead, "start", lambda model, env=os.environ: started.append(model))
    monkeypatch.setattr(early_start.watermark_pool, "prestart", lambda *a: None)
    monkeypatch.setattr(early_start, "encoder_process", lambda nice: None)
    try:
        early_start.start(["serve", "--model", str(tmp_path), "--no-watermark"])
        early_start.start(["serve", "--device", "cpu", "--model", "elsewhere"])  # a CPU engine: no read-ahead
    finally:
        early_start._encoders.clear()
    assert started == [str(tmp_path)]
