"""Decode-shaped (M = 2) weight-only int8 matmul options vs bf16 cuBLAS, timed in CUDA graphs."""
import torch
import torch.nn.functional as F


def bench(fn, n=50):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay(); torch.cuda.synchronize()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.record()
    for _ in range(10):
        g.replay()
    en.record(); torch.cuda.synchronize()
    return st.elapsed_time(en) / 10 / n * 1e3


for N, K in ((3072, 1024), (8192, 1024), (1024, 4096)):
    x = torch.randn(2, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    s = w.float().abs().amax(1) / 127
    q = (w.float() / s[:, None]).round().clamp(-127, 127).to(torch.int8)
    ref = F.linear(x, w)
    print(f"N={N} K={K}: bf16 F.linear {bench(lambda: F.linear(x, w)):.2f} us")
    print(f"  dequant+linear {bench(lambda: F.linear(x, q.to(torch.bfloat16)) * s.to(torch.bfloat16)):.2f} us")
    from cadence.memory.int8_triton import int8_mm
    sb = s.to(torch.bfloat16)
    for bn, bk in ((16, 256), (32, 256), (32, 512), (64, 256), (16, 512), (64, 128)):
        out = int8_mm(x, q, sb, bn, bk)
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"  triton int8 bn={bn} bk={bk}: {bench(lambda: int8_mm(x, q, sb, bn, bk)):.2f} us, rel err {err:.1e}")
    try:
        out = torch._weight_int8pack_mm(x, q, s.to(torch.bfloat16))
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"  _weight_int8pack_mm {bench(lambda: torch._weight_int8pack_mm(x, q, s.to(torch.bfloat16))):.2f} us, rel err {err:.1e}")
    except Exception as e:  # noqa: BLE001
        print(f"  _weight_int8pack_mm: {type(e).__name__}: {str(e)[:100]}")
