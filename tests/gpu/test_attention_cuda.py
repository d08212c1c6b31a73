"""Cadence's attention calls on CUDA (skipped without it): never cuDNN's backend (it builds a plan per new shape),
the same result as the dispatcher's own choice, and PyTorch's process-wide backend switch left as it was."""

import pytest
import torch
import torch.nn.functional as F

from cadence.layers import attention as attention_mod
from cadence.layers.attention import attention

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _kernels_of(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages()}


def _padded_batch():
    """q, k, v (3, 8, 150, 64) bf16 and a key-padding bias: row 1 sees 100 keys, row 2 sees 37."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(3, 8, 150, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    bias = torch.zeros(3, 1, 1, 150, device="cuda", dtype=torch.bfloat16)
    bias[1, ..., 100:] = float("-inf")
    bias[2, ..., 37:] = float("-inf")
    torch.backends.cuda.enable_cudnn_sdp(True)
    return q, k, v, bias


@pytest.mark.parametrize("masked", [False, True])
def test_attention_on_cuda_avoids_cudnn_and_matches_the_dispatcher(masked):
    q, k, v, bias = _padded_batch()
    bias = bias if masked else None
    ops = _kernels_of(lambda: attention(q, k, v, bias))
    assert not any("cudnn_attention" in op for op in ops), ops
    assert torch.backends.cuda.cudnn_sdp_enabled()  # put back as it was
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=None if bias is None else bias.float())
    torch.testing.assert_close(attention(q, k, v, bias).float(), want, atol=2e-2, rtol=2e-2)


def test_without_the_switch_the_dispatcher_picks_cudnn_for_these_shapes(monkeypatch):
    """What the test above guards against: on this GPU and torch, the dispatcher's own choice for a padded batch
    is cuDNN's attention (if it is not, the test above proves nothing here)."""
    monkeypatch.setattr(attention_mod, "CUDNN_ATTENTION", True)
    q, k, v, bias = _padded_batch()
    assert any("cudnn_attention" in op for op in _kernels_of(lambda: attention(q, k, v, bias)))


def test_graph_captures_keep_the_dispatchers_choice():
    """Inside `dispatcher_choice` (the CFM graphs' captures) the same padded batch does take cuDNN's kernel."""
    from cadence.layers.attention import dispatcher_choice
    q, k, v, bias = _padded_batch()
    with dispatcher_choice():
        ops = _kernels_of(lambda: attention(q, k, v, bias))
    assert any("cudnn_attention" in op for op in ops), ops


def test_padded_batches_take_variable_length_flash_attention():
    """The estimator's padded batches: variable-length FlashAttention (no cuDNN plan, no bias), the bias form's
    result on every real query and on the padded ones too; inside `dispatcher_choice`, the bias form."""
    from cadence.layers.attention import dispatcher_choice
    from cadence.layers.key_padding import key_padding, padded_attention
    q, k, v, bias = _padded_batch()
    mask = (bias[:, 0] == 0).to(torch.bfloat16)  # (3, 1, 150): rows of 150, 100 and 37 real positions
    padding = key_padding(mask, torch.bfloat16)
    # as the estimator lays them out: heads as a view of (B, T, H * D)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    ops = _kernels_of(lambda: padded_attention(q, k, v, padding))
    assert any("flash" in op for op in ops) and not any("cudnn" in op or "efficient" in op for op in ops), ops
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.float())
    torch.testing.assert_close(padded_attention(q, k, v, padding).float(), want, atol=2e-2, rtol=2e-2)
    with dispatcher_choice():
        assert any("cudnn_attention" in op for op in _kernels_of(lambda: padded_attention(q, k, v, padding)))


def test_padded_attention_replays_in_a_cuda_graph_with_new_lengths():
    """The segments are built on the GPU from the mask, so a captured graph serves any row lengths."""
    from cadence.layers.key_padding import key_padding, padded_attention
    q, k, v, _ = _padded_batch()
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    mask = torch.ones(3, 1, 150, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        padded_attention(q, k, v, key_padding(mask, torch.bfloat16))  # warm-up off the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = padded_attention(q, k, v, key_padding(mask, torch.bfloat16))
    mask[1, :, 60:] = 0
    graph.replay()
    bias = ((1.0 - mask.float()) * -1.0e10)[:, None]
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)


def test_segments_count_long_rows_exactly_on_cuda():
    """Rows longer than bf16's exact integers (256), as the flow's batches are."""
    from cadence.layers.key_padding import key_padding
    mask = torch.zeros(2, 1, 900, device="cuda", dtype=torch.bfloat16)
    mask[0, :, :837], mask[1] = 1, 1
    assert key_padding(mask, torch.bfloat16).cu_k.tolist() == [0, 837, 900, 1800, 1800]
