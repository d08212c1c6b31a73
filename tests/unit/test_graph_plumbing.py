"""The flow's graph wrappers (fixed tensors, padding to buckets, one captured Euler step replayed per step) give
what the eager math gives. CUDA capture itself needs a GPU (tests/gpu); here each "graph" replays its function
eagerly, which checks everything around the capture: bucketing, padding rows and frames, the time grid."""

import pytest
import torch

from cadence.engine import cfm_graph


class _Replay:
    def __init__(self, fn):
        self.replay = fn


@pytest.fixture
def eager_capture(monkeypatch):
    monkeypatch.setattr(cfm_graph, "capture", lambda fn, pool=None, warmup=None: (_Replay(fn), fn()))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)


def test_window_graphs_equal_solve_padded(tiny_tts, eager_capture):
    flow = tiny_tts.s3gen.flow
    graphs = cfm_graph.WindowGraphs(flow)
    g = torch.Generator().manual_seed(0)
    for B, T in ((3, 40), (1, 33), (5, 70)):
        tokens = torch.randint(0, 6561, (B, T), generator=g)
        lengths = torch.tensor([T, T - 7, T - 20, T - 3, T - 1][:B])
        frames = 2 * lengths - 6
        noise, cond = (torch.randn(B, 80, 2 * T, generator=g) for _ in range(2))
        xvector = torch.randn(B, 192, generator=g)
        with torch.inference_mode():
            a = graphs(tokens, lengths, frames, noise, cond, xvector, 10)
            b = flow.solve_padded(tokens, lengths, frames, noise, cond, xvector, 10)
        assert a.shape == b.shape
        for i in range(B):
            n = int(frames[i])
            torch.testing.assert_close(a[i, :, :n], b[i, :, :n], rtol=1e-4, atol=1e-4)
    assert sorted(graphs.captured) == [(1, 64), (4, 64), (8, 96)]


def test_cfm_graphs_equal_the_eager_solve(tiny_tts, eager_capture):
    cfm = tiny_tts.s3gen.flow.decoder
    graphs = cfm_graph.CFMGraphs(cfm)
    g = torch.Generator().manual_seed(1)
    T = 150
    noise, mu, cond = (torch.randn(1, 80, T, generator=g) for _ in range(3))
    mask, spks = torch.ones(1, 1, T), torch.randn(1, 80, generator=g)
    with torch.inference_mode():
        a = graphs.solve(noise, mu, mask, spks, cond, 10)
        b = cfm.solve(noise, mu, mask, spks, cond, 10)
        c = graphs.solve(noise, mu, mask, spks, cond, 4)  # another step count reuses the same step graph
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert list(graphs.captured) == [256] and not torch.allclose(a, c)
