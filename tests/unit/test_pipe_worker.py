"""The helper processes' common side: a worker that stops answering is killed and replaced, never waited on."""

import textwrap
import time

import pytest

from cadence.pipe_worker import OK, PipeWorker, WorkerGone

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


@pytest.fixture()
def module_dir(tmp_path, monkeypatch):
    (tmp_path / "hanging_worker.py").write_text(HANGING)
    (tmp_path / "echo_worker.py").write_text(ECHO)
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
