"""The flow's graph wrappers (fixed tensors, padding to buckets, one captured Euler step replayed per step) give
what the eager math gives. CUDA capture itself needs a GPU (tests/gpu); here each "graph" replays its function
eagerly, which checks everything around the capture: bucketing, padding rows and frames, output reuse."""

import pytest
import torch

from cadence.engine import cfm_graph


def _eager_capture(fn, pool=None, warmup=None):
    """A stand-in for `cuda_graphs.capture`: replaying runs `fn` again and, as a CUDA graph does, rewrites the
    output tensor the capture returned."""
    out = fn()

    class Graph:
        @staticmethod
        def replay():
            new = fn()
            if isinstance(out, torch.Tensor):
                out.copy_(new)
    return Graph(), out


@pytest.fixture
def eager_capture(monkeypatch):
    monkeypatch.setattr(cfm_graph, "capture", _eager_capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)


def test_batched_cfm_graphs_equal_the_eager_padded_windows(tiny_tts, eager_capture):
    flow = tiny_tts.s3gen.flow
    graphs = cfm_graph.CFMGraphs(flow.decoder)
    g = torch.Generator().manual_seed(0)
    for B, T in ((3, 40), (1, 33), (5, 70)):
        tokens = torch.randint(0, 6561, (B, T), generator=g)
        lengths = torch.tensor([T, T - 7, T - 20, T - 3, T - 1][:B])
        frames = 2 * lengths - 6
        noise, cond = (torch.randn(B, 80, 2 * T, generator=g) for _ in range(2))
        xvector = torch.randn(B, 192, generator=g)
        with torch.inference_mode():
            a = flow.solve_padded(tokens, lengths, frames, noise, cond, xvector, 10, solver=graphs.solve)
            b = flow.solve_padded(tokens, lengths, frames, noise, cond, xvector, 10)
        assert a.shape == b.shape
        for i in range(B):
            n = int(frames[i])
            torch.testing.assert_close(a[i, :, :n], b[i, :, :n], rtol=1e-4, atol=1e-4)
    assert sorted(graphs.captured) == [(1, 128, 10), (4, 128, 10), (8, 192, 10)]


def test_warm_up_covers_every_window_a_bounded_stream_makes(tiny_ckpt, eager_capture):
    """After `warm_flow_graphs`, streams with the default bounded context never capture a graph while serving
    (a capture stalls the audio worker for about half a second on a GPU)."""
    from cadence.engine.request import Request
    from cadence.sampling_params import SamplingParams
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, max_batch=4)
    tts.audio_runner.cfm_graphs = cfm_graph.CFMGraphs(tts.s3gen.flow.decoder)
    cfm_graph.warm_flow_graphs(tts, 300, tts.engine.max_batch)
    warmed = set(tts.audio_runner.cfm_graphs.captured)
    assert {rows for rows, _, _ in warmed} == {1, 2, 4}
    handles = [tts.submit(Request("Streaming through warmed graphs only.", None,
                                  SamplingParams(seed=i, max_new_tokens=120 + 70 * i), ignore_eos=True,
                                  speech_tokens_only=True, stream=True)) for i in range(4)]
    for h in handles:
        assert h.result(timeout=600).duration > 0
    assert set(tts.audio_runner.cfm_graphs.captured) == warmed
    tts.close()
