"""The CFM graphs' capture and replay with the estimator's attention as cuDNN's kernel (the dispatcher's choice
inside captures) or as variable-length FlashAttention (`cadence.engine.cfm_graph.CAPTURE_WITH_CUDNN`), GPU. Loads
a checkpoint as `cadence serve` does, then captures graphs of a few (rows, frames) shapes, timing each capture,
then replays each 5 times (median) beside the same solve run eagerly. CAPTURE=cudnn|varlen: one process per
variant (cuDNN's plans are cached process-wide, so a second variant in one process would not pay for them).
Usage: CAPTURE=varlen python scripts/cfm_capture_probe.py CHECKPOINT_DIR OUT.json"""

import json
import os
import statistics
import sys
import time

import torch

from cadence.engine import cfm_graph
from cadence.tts import TTS

SHAPES = [(1, 384), (1, 640), (1, 896), (1, 1152), (2, 448), (4, 448), (8, 448), (8, 704)]


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main(ck: str, out: str) -> None:
    variant = os.environ.get("CAPTURE", "varlen")
    cfm_graph.CAPTURE_WITH_CUDNN = variant == "cudnn"
    (tts, load_s) = timed(lambda: TTS.from_dir(ck, device="cuda", watermark=False))
    runner = tts.audio_runner
    graphs, cfm = runner.cfm_graphs, tts.s3gen.flow.decoder
    steps, dtype, mel = tts.s3gen.flow.cfg.n_timesteps, runner.flow_dtype, cfm.cfg.mel_dim
    res = {"device": torch.cuda.get_device_name(), "variant": variant, "load_s": load_s, "shapes": []}
    g = torch.Generator(device="cuda").manual_seed(0)
    for rows, frames in SHAPES:
        _, capture_s = timed(lambda: graphs.prepare(rows, frames, steps, runner.device, dtype))
        real = frames - 40  # a padded bucket, as requests replay it
        noise, mu, cond = (torch.randn(rows, mel, real, device="cuda", dtype=dtype, generator=g) for _ in range(3))
        mask = torch.ones(rows, 1, real, device="cuda", dtype=dtype)
        spks = torch.randn(rows, mel, device="cuda", dtype=dtype, generator=g)
        replay = [timed(lambda: graphs.solve(noise, mu, mask, spks, cond, steps))[1] for _ in range(5)]
        eager = [timed(lambda: cfm.solve(noise, mu, mask, spks, cond, steps))[1] for _ in range(3)]
        row = {"rows": rows, "frames": frames, "capture_s": capture_s, "replay_s": statistics.median(replay),
               "eager_s": statistics.median(eager)}
        res["shapes"].append(row)
        print(json.dumps(row), flush=True)
    res["capture_total_s"] = sum(r["capture_s"] for r in res["shapes"])
    print(variant, "captures", round(res["capture_total_s"], 2), "s", flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
