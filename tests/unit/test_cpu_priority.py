"""Helper threads beside a GPU engine run below its threads on the CPU; beside a CPU engine they do not."""

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cadence.engine.cpu_priority import HELPER_NICE, lower_beside_gpu, lower_this_thread


def _nice_of_a_pool_thread(engine_device: str) -> int:
    with ThreadPoolExecutor(max_workers=1, initializer=lower_beside_gpu,
                            initargs=(torch.device(engine_device),)) as pool:
        return pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()


@pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread on Linux only")
def test_helpers_beside_a_gpu_engine_run_at_lower_priority_and_only_they():
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert _nice_of_a_pool_thread("cuda") == min(19, mine + HELPER_NICE)
    assert _nice_of_a_pool_thread("cpu") == mine  # a CPU engine: unchanged
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's own thread too


def test_lowering_is_refused_quietly_where_nice_is_per_process(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert lower_this_thread() is False


def test_a_helpers_torch_team_is_bounded_in_its_own_thread_only():
    """The watermark lanes' torch work: the team size is set for the helper's thread, not for the process."""
    mine = torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=1, initializer=lower_beside_gpu,
                            initargs=(torch.device("cuda"), 1)) as pool:
        assert pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == mine
