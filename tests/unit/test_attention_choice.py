"""Which attention backend Cadence leaves to PyTorch's dispatcher: only inside `dispatcher_choice`, only on the thread
that entered it (the CFM graphs are captured on the engine's thread while the audio thread runs eager solves), and
as before once it exits. (What each choice runs on CUDA: tests/gpu/test_attention_cuda.py.)"""

import threading

import torch
import torch.nn.functional as F

from cadence.layers.attention import attention, dispatcher_choice, dispatcher_chooses


def test_the_dispatchers_choice_holds_on_the_entering_thread_only_and_ends_with_the_block():
    assert not dispatcher_chooses()
    seen_elsewhere = []
    with dispatcher_choice():
        assert dispatcher_chooses()
        with dispatcher_choice():  # nested: still on after the inner block
            pass
        assert dispatcher_chooses()
        t = threading.Thread(target=lambda: seen_elsewhere.append(dispatcher_chooses()))
        t.start()
        t.join()
    assert seen_elsewhere == [False]
    assert not dispatcher_chooses()


def test_attention_on_the_cpu_is_the_plain_call_with_a_key_padding_bias():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 16, generator=g) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 10)
    bias[1, ..., 6:] = float("-inf")
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(attention(q, k, v, bias), want)
    torch.testing.assert_close(attention(q, k, v, is_causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True))
