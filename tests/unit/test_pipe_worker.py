"""The helper processes' common side: a worker that stops answering is killed and replaced, never waited on."""

import signal
import textwrap
import time

import pytest

from cadence.pipe_worker import OK, PipeWorker, WorkerGone, close_all

HANGING = textwrap.dedent('''
    import time
    from cadence.pipe_worker import OK, read_exact, reply, worker_pipes

    def main():
        inp, out = worker_pipes()
        reply(out, OK)
        while read_exact(inp, 1) is not None:
            time.sleep(3600)  # never answers
''')

ECHO = textwrap.dedent('''
    from cadence.pipe_worker import OK, read_exact, reply, worker_pipes

    def main():
        inp, out = worker_pipes()
        print("printed, never a frame")  # goes to stderr: the protocol's stdout stays clean
        reply(out, OK)
        while (b := read_exact(inp, 1)) is not None:
            reply(out, OK, b * 3)
''')

STILL_STARTING = textwrap.dedent('''
    import time

    def main():
        time.sleep(3600)  # imports that take long: never sends its ready frame
''')

STUBBORN = textwrap.dedent('''
    import time
    from cadence.pipe_worker import OK, reply, worker_pipes

    def main():
        inp, out = worker_pipes()
        reply(out, OK)
        time.sleep(3600)  # never reads its pipe, so never sees it close
''')


@pytest.fixture()
def module_dir(tmp_path, monkeypatch):
    (tmp_path / "hanging_worker.py").write_text(HANGING)
    (tmp_path / "echo_worker.py").write_text(ECHO)
    (tmp_path / "starting_worker.py").write_text(STILL_STARTING)
    (tmp_path / "stubborn_worker.py").write_text(STUBBORN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_a_worker_answers_through_its_frames(module_dir):
    w = PipeWorker("echo_worker", [])
    try:
        assert w.wait_ready(60)
        assert w.request(b"x") == (OK, b"xxx")
    finally:
        w.close()


def test_a_hung_worker_is_killed_after_the_timeout_and_replaced(module_dir, monkeypatch):
    monkeypatch.setattr(PipeWorker, "request_timeout_s", 1.0)
    w = PipeWorker("hanging_worker", [])
    try:
        assert w.wait_ready(60)
        old, t0 = w.pid, time.monotonic()
        with pytest.raises(WorkerGone, match="no answer within"):
            w.request(b"x")
        assert time.monotonic() - t0 < 30 and w.restarts == 1 and w.pid != old
    finally:
        w.close()


def test_closing_kills_a_worker_still_starting_and_lets_a_started_one_exit(module_dir):
    """A server stopping right after start-up must not wait for its helpers' imports: a worker that has not said
    it is ready has nothing to finish and is killed; a ready one exits by itself when its pipe closes."""
    starting, started = PipeWorker("starting_worker", []), PipeWorker("echo_worker", [])
    assert started.wait_ready(60) and not starting.usable
    procs = [starting._proc, started._proc]
    close_all([starting, started], timeout=60)
    assert procs[0].returncode == -signal.SIGKILL
    assert procs[1].returncode == 0
    assert starting.pid is None and started.pid is None and not started.usable


def test_close_all_kills_a_worker_that_ignores_its_closed_pipe(module_dir):
    w = PipeWorker("stubborn_worker", [])
    assert w.wait_ready(60)
    proc = w._proc
    close_all([w], timeout=0.2)
    assert proc.returncode == -signal.SIGKILL
    w.close()  # closing twice is harmless
