"""The CFM estimator's rows side by side on the CPU (`memory.cpu_rows`): each worker computes with its own share of
the threads while the caller's count, and the count of threads started later, stay as they were; the rows' results
are each row computed alone; a lone row stays on the caller."""

import threading

import pytest
import torch

from cadence.memory import cpu_int8
from cadence.memory.cpu_rows import RowWorkers, estimator_rows_side_by_side_, rows_side_by_side
from cadence.models.s3gen.estimator import ConditionalDecoder, EstimatorConfig

TINY = EstimatorConfig(channels=32, n_blocks=1, n_mid=1, heads=2, head_dim=16)


def _inputs(rows: int, frames: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, mu, cond = (torch.randn(rows, 80, frames, generator=g) for _ in range(3))
    mask = torch.ones(rows, 1, frames)
    mask[-1, :, frames - 5:] = 0  # the last row padded, as in a batch of requests of several lengths
    return x, mask, mu, torch.rand(rows, generator=g), torch.randn(rows, 80, generator=g), cond


def test_workers_compute_with_their_share_and_leave_the_callers_count():
    before = torch.get_num_threads()
    workers = RowWorkers(2, 1)
    try:
        assert workers.threads() == [1, 1]
        assert torch.get_num_threads() == before
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # reads the process-wide count
        later.start()
        later.join()
        assert seen == [before]
    finally:
        workers.pool.shutdown()


def test_a_worker_shape_that_cannot_run_is_refused():
    with pytest.raises(ValueError, match="at least one worker"):
        RowWorkers(0, 1)
    with pytest.raises(ValueError, match="one thread each"):
        RowWorkers(2, 0)


@torch.inference_mode()
def test_rows_side_by_side_are_each_row_computed_alone():
    torch.manual_seed(0)
    est = ConditionalDecoder(TINY).eval()
    args = _inputs(3)
    alone = torch.cat([est(*(a[i:i + 1] for a in args)) for i in range(3)])
    workers = RowWorkers(2, 1)
    try:
        calls = []
        forward = est.forward

        def counted(*a):
            calls.append((threading.current_thread().name, a[0].shape[0]))
            return forward(*a)
        side_by_side = rows_side_by_side(counted, workers)
        got = side_by_side(*args)
        assert torch.allclose(got, alone, atol=1e-6, rtol=1e-5), (got - alone).abs().max()
        assert len(calls) == 3 and all(rows == 1 and name.startswith("cadence-rows") for name, rows in calls)
        calls.clear()
        one = side_by_side(*(a[:1] for a in args))  # a lone row: on the caller, no hand-over
        assert calls == [(threading.current_thread().name, 1)] and torch.equal(one, alone[:1])
    finally:
        workers.pool.shutdown()


@torch.inference_mode()
def test_the_transform_wraps_every_estimator_and_needs_two_threads():
    est = ConditionalDecoder(TINY).eval()
    assert estimator_rows_side_by_side_(est, threads=1) == 0 and "forward" not in vars(est)
    assert estimator_rows_side_by_side_(est, threads=2) == 1 and "forward" in vars(est)
    args = _inputs(2)
    assert est(*args).shape == (2, 80, 24)


@pytest.mark.skipif(not cpu_int8.available(), reason="this PyTorch build has no FBGEMM")
@torch.inference_mode()
def test_with_int8_projections_a_rows_result_no_longer_depends_on_its_batch():
    """Dynamic int8 quantises each call's input as a whole: batched, a row's scale came from its neighbours too."""
    torch.manual_seed(0)
    est = ConditionalDecoder(TINY).eval()
    cpu_int8.quantize_dynamic_int8_(est, lambda name: ".attn1." in name or ".ff." in name)
    args = _inputs(2)
    loud = tuple(torch.cat((a[:1], a[1:] * 50)) if a.dim() > 1 and a.shape[1] == 80 else a for a in args)
    estimator_rows_side_by_side_(est, threads=2)
    assert torch.equal(est(*args)[:1], est(*loud)[:1])
