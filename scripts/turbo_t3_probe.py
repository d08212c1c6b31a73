"""Where Turbo's single-stream T3 step goes (GPU): ms per decode step through the captured graph with Turbo's
default filters (top_k 1000, top_p 0.95) and with none, the filters as one kernel against the eager filters (A/B
in this process, alternating), a kernel profile of eager decode steps by kernel, and
each GPT-2 projection as one row through cuBLAS and through the fused decode kernel (µs per call in a graph).
Usage: python scripts/turbo_t3_probe.py CHECKPOINT_DIR OUT.json"""

import json
import sys
import time

import torch

from cadence.layers.sampling import filters_for, process_logits
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS
from probe_timing import replay_ms

STEPS = 300
CALLS = 50  # calls per captured graph in the projection timings


def filters_ab(tts, voice, rounds: int = 3) -> dict:
    """Turbo's defaults through captured graphs, the filters as one kernel vs as eager math (a decoder of each),
    alternating: tokens/s of each round, and whether the two gave the same tokens."""
    from cadence.engine.t3_graph import T3GraphDecoder
    p = SamplingParams.for_family(tts.family, max_new_tokens=STEPS, seed=1)
    prefill = tts.prefill("Hello there, this is a quick test of the reference model.", voice, p)
    decoders = {}
    for name, filters in (("kernel", filters_for("cuda")), ("eager", process_logits)):
        decoders[name] = T3GraphDecoder(tts.t3, 1, 1024, 1024)
        decoders[name].filters = filters  # before the defaults' graphs are captured (on the first generate)
    out = {"kernel": [], "eager": [], "same_tokens": True}
    tokens = {}
    for _ in range(rounds + 1):
        for name, d in decoders.items():
            torch.cuda.synchronize()
            t = time.perf_counter()
            got = d.generate(prefill, p, 1, STEPS, STEPS, speech_only=True)
            torch.cuda.synchronize()
            if name in tokens:  # the first round captures
                out[name].append(round(len(got) / (time.perf_counter() - t), 1))
                out["same_tokens"] &= tokens[name] == got
            tokens[name] = got
    out["same_tokens"] &= tokens["kernel"] == tokens["eager"]
    for d in decoders.values():
        d.close()
    print("filters A/B tokens/s", out, flush=True)
    return out


def linear_timings() -> list[dict]:
    """One row through each GPT-2 medium projection: cuBLAS (F.linear + the eager norm/GELU/add around it) against
    the fused decode kernel, timed as CALLS calls in one CUDA graph."""
    import torch.nn.functional as F

    from cadence.layers.decode_linear import launch
    bf = dict(device="cuda", dtype=torch.bfloat16)
    rows = []
    for name, k, n, norm, gelu, res in (("c_attn", 1024, 3072, True, False, False), ("attn.c_proj", 1024, 1024, False, False, True),
                                        ("c_fc", 1024, 4096, True, True, False), ("mlp.c_proj", 4096, 1024, False, False, True)):
        x, w, b = torch.randn(1, k, **bf), torch.randn(n, k, **bf) * 0.02, torch.randn(n, **bf)
        lw, lb, r = torch.ones(k, **bf), torch.zeros(k, **bf), torch.randn(1, n, **bf)

        def eager():
            h = F.layer_norm(x, (k,), lw, lb, 1e-5) if norm else x
            y = F.linear(h, w, b)
            y = F.gelu(y, approximate="tanh") if gelu else y
            return r + y if res else y

        def fused():
            return launch(x, w, b, (lw, lb, 1e-5) if norm else None, gelu, r if res else None)
        row = {"name": name, "k": k, "n": n}
        for label, fn in (("cublas_us", lambda: F.linear(x, w, b)), ("eager_us", eager), ("fused_us", fused)):
            fn()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(CALLS):
                    fn()
            row[label] = round(1000 * replay_ms(g, 20) / CALLS, 2)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(ckpt: str, out: str) -> None:
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
    voice = tts.default_voice
    res = {"device": torch.cuda.get_device_name(), "steps": STEPS, "linears": linear_timings()}
    res["filters_ab"] = filters_ab(tts, voice)
    for name, knobs in (("turbo_defaults", {}), ("no_filters", {"top_k": 0, "top_p": 1.0})):
        p = SamplingParams.for_family(tts.family, max_new_tokens=STEPS, seed=1, **knobs)
        prefill = tts.prefill("Hello there, this is a quick test of the reference model.", voice, p)
        gen = 1  # the seed
        tts.t3_runner.generate(prefill, p, gen, speech_only=True)  # capture
        torch.cuda.synchronize()
        t = time.perf_counter()
        n = len(tts.t3_runner.generate(prefill, p, gen, speech_only=True).tokens)
        torch.cuda.synchronize()
        res[name] = {"ms_per_step": 1000 * (time.perf_counter() - t) / n, "tokens": n}
        print(name, res[name], flush=True)
    # Kernel time by kernel, eager steps (the graph replays the same kernels without launch gaps).
    p = SamplingParams.for_family(tts.family, max_new_tokens=40, seed=1)
    prefill = tts.prefill("Hello there.", voice, p)
    tts.t3_runner.use_graphs = False
    gen = 1  # the seed
    tts.t3_runner.generate(prefill, p, gen, speech_only=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        n = len(tts.t3_runner.generate(prefill, p, gen, speech_only=True).tokens)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": e.key[:90], "us_per_step": us / n, "calls_per_step": e.count / n})
    rows.sort(key=lambda r: -r["us_per_step"])
    res["eager_kernels"] = {"total_us_per_step": sum(r["us_per_step"] for r in rows),
                            "kernels_per_step": sum(r["calls_per_step"] for r in rows), "top": rows[:25]}
    print(f"eager kernels: {res['eager_kernels']['total_us_per_step']:.0f} us/step, "
          f"{res['eager_kernels']['kernels_per_step']:.0f} kernels/step", flush=True)
    for r in rows[:12]:
        print(f"- {r['us_per_step']:7.1f} us {r['calls_per_step']:5.1f}x  {r['kernel'][:70]}", flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
