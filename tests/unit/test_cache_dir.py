"""Cadence's cache directory, and the compiled GPU kernels kept in it (`cadence.cache_dir`)."""

import os
import subprocess
import sys
from pathlib import Path

from cadence.cache_dir import cache_dir, keep_compiled_kernels


def test_the_cache_directory_follows_cadence_cache_then_xdg_then_home():
    assert cache_dir({"CADENCE_CACHE": "/srv/c", "XDG_CACHE_HOME": "/x"}) == Path("/srv/c")
    assert cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/cadence")
    assert cache_dir({}) == Path.home() / ".cache" / "cadence"


def test_the_compilers_caches_go_into_it_unless_the_user_chose_theirs():
    env = {"CADENCE_CACHE": "/srv/c"}
    assert keep_compiled_kernels(env) == {"TRITON_CACHE_DIR": "/srv/c/triton", "TORCHINDUCTOR_CACHE_DIR": "/srv/c/inductor"}
    assert env["TRITON_CACHE_DIR"] == "/srv/c/triton"
    mine = {"CADENCE_CACHE": "/srv/c", "TRITON_CACHE_DIR": "/mine", "TORCHINDUCTOR_CACHE_DIR": ""}
    assert keep_compiled_kernels(mine) == {"TORCHINDUCTOR_CACHE_DIR": "/srv/c/inductor"}  # empty counts as unset
    assert mine["TRITON_CACHE_DIR"] == "/mine"


def test_the_command_sets_them_before_anything_reads_them(tmp_path):
    """A fresh process: `cadence` run as a user runs it, with only CADENCE_CACHE set."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
    env["CADENCE_CACHE"] = str(tmp_path)
    code = ("import os, sys; from cadence import cli\n"
            "try:\n    cli.main(['checkpoint', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ['TRITON_CACHE_DIR'], os.environ['TORCHINDUCTOR_CACHE_DIR'], file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stderr.split()[-2:] == [str(tmp_path / "triton"), str(tmp_path / "inductor")], out.stderr
