"""The batched engine's T3 decode step (GPU): device time of one captured step by batch size at a fixed attention
length (every row's live prefix that long), with the sampling filters as one kernel and as eager math, and the
kernels of eager steps at one batch size grouped by kernel.
Usage: python scripts/t3_batch_probe.py CHECKPOINT_DIR OUT.json [ATTEND] [PROFILE_BATCH]"""

import json
import sys

import torch

from cadence.layers.sampling import filters_for, process_logits
from cadence.tts import TTS
from probe_timing import replay_ms


def main(ckpt: str, out: str, attend: int = 768, profile_batch: int = 32) -> None:
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
    engine = tts.engine
    engine.call(lambda: probe(tts, engine.decoder, out, attend, profile_batch)).result()  # on the GPU thread
    tts.close()


def probe(tts, dec, out: str, attend: int, profile_batch: int) -> None:
    d = tts.family.defaults
    flags = (d["top_k"] > 0, d["top_p"] < 1.0)
    attend = dec.length_for(attend)
    res = {"device": torch.cuda.get_device_name(), "family": tts.family.name, "attend": attend,
           "rows_per_slot": dec.per_slot, "steps": []}
    with torch.inference_mode():
        dec.pos.fill_(attend - 1)
        dec.active.fill_(1)
        for name, filters in (("kernel", filters_for("cuda")), ("eager", process_logits)):
            dec.filters = filters
            for b in dec.sizes:
                key = (b, attend, *flags)
                if key in dec.graphs:
                    dec.graphs.pop(key).reset()
                dec.pos.fill_(attend - 1)
                dec.capture(key)
                dec.pos.fill_(attend - 1)
                ms = replay_ms(dec.graphs[key], 30)
                res["steps"].append({"filters": name, "batch": b, "ms": ms, "us_per_request": 1000 * ms / b})
                print(res["steps"][-1], flush=True)
        dec.filters = filters_for("cuda")
        b = dec.size_for(profile_batch)
        dec.pos.fill_(attend - 1)
        dec._step(b, attend, *flags)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                dec.pos.fill_(attend - 1)
                dec._step(b, attend, *flags)
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": e.key[:90], "us_per_step": us / 5, "calls_per_step": e.count / 5})
    rows.sort(key=lambda r: -r["us_per_step"])
    res["profile"] = {"batch": b, "total_us_per_step": sum(r["us_per_step"] for r in rows), "top": rows[:25]}
    print(f"batch {b}: eager step kernels {res['profile']['total_us_per_step']:.0f} us", flush=True)
    for r in rows[:15]:
        print(f"- {r['us_per_step']:8.1f} us {r['calls_per_step']:5.1f}x  {r['kernel'][:70]}", flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
