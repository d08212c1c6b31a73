"""Decode-shaped attention (q_len 1, CFG pair) under each SDPA backend, timed in a CUDA graph of 30 calls."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

q = torch.randn(2, 16, 1, 64, device="cuda", dtype=torch.bfloat16)
for S in (256, 1024):
    k = torch.randn(2, 16, S, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    mask = torch.zeros(1, S, device="cuda", dtype=torch.bfloat16)
    mask[:, S - 10:] = float("-inf")
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float())
    for name, backends in [("default", None), ("efficient", [SDPBackend.EFFICIENT_ATTENTION]),
                           ("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("math", [SDPBackend.MATH])]:
        try:
            ctx = sdpa_kernel(backends) if backends else torch.autocast("cuda", enabled=False)
            with ctx:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                g = torch.cuda.CUDAGraph()
                s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                torch.cuda.current_stream().wait_stream(s)
                with torch.cuda.graph(g):
                    for _ in range(30):
                        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            for _ in range(3):
                g.replay()
            st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            st.record()
            for _ in range(20):
                g.replay()
            en.record(); torch.cuda.synchronize()
            err = (out.float() - ref).abs().max().item()
            print(f"S={S} {name}: {st.elapsed_time(en) / 20 / 30 * 1e3:.2f} us/call, max err {err:.1e}")
        except Exception as e:  # noqa: BLE001
            print(f"S={S} {name}: {type(e).__name__}: {str(e)[:80]}")
