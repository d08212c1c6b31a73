"""The first requests after start-up, on the engine alone (GPU): load a checkpoint as `cadence serve` does (graphs
planned for the background, `Engine.warmup(background=True)`), send CLIENTS clients x REQUESTS one-piece requests
of TOKENS forced tokens the moment it is loaded, and log what the GPU thread did meanwhile: every graph capture
(decode or flow; asked for by a running request or planned) with its start and duration, the steps and solves
that ran eagerly for want of a graph, and every padded S3Gen batch (flow or vocoder: rows, padded length, seconds,
whether its shape was new to the process: cuDNN builds a convolution plan per new shape; the flow's length in
tokens, the vocoder's in mel frames). Then the rest of the plan is dropped and the same level runs twice more on
the graphs it captured: the warm figure the first one is compared with. Start-up phases are timed from the
script's start (before torch is imported).
As the server does, it waits for Perth's imports and the first-traffic decode graphs before the first requests.
MODE: one-piece (default) or streamed (then the time to first audio is reported too).
Usage: python scripts/first_burst.py CHECKPOINT_DIR OUT.json [CLIENTS] [REQUESTS] [TOKENS] [PLANNED_SHARE] [MODE]"""

import time

T0 = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import torch  # noqa: E402

from cadence.bench.engine_replay import engine_level  # noqa: E402
from cadence.bench.serve import level_bodies  # noqa: E402
from cadence.engine import cfm_graph, warmup  # noqa: E402
from cadence.engine.batch_t3 import BatchDecoder  # noqa: E402
from cadence.tts import TTS  # noqa: E402

EVENTS: list[dict] = []
EAGER = {"decode_steps": 0, "flow_solves": 0}


def since() -> float:
    return round(time.perf_counter() - T0, 4)


def instrument() -> None:
    run_one, capture, prepare = warmup.BackgroundWarmup.run_one, BatchDecoder.capture, cfm_graph.CFMGraphs.prepare
    run_step, solve = BatchDecoder.run_step, cfm_graph.CFMGraphs.solve
    where = threading.local()

    def timed_run_one(self, busy=False, audio_busy=False):
        flow = self._flow
        where.wanted = bool(self._decoder.wanted or (flow is not None and flow.wanted))
        where.busy = busy
        return run_one(self, busy, audio_busy)

    def log(kind, key, fn):
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        EVENTS.append({"t": round(t - T0, 4), "kind": kind, "key": list(key)[:3], "s": time.perf_counter() - t,
                       "wanted": getattr(where, "wanted", None), "busy": getattr(where, "busy", None)})
        return out

    def timed_capture(self, key):
        if key in self.graphs:
            return capture(self, key)
        return log("decode", key, lambda: capture(self, key))

    def timed_prepare(self, rows, frames, n_steps, device, dtype):
        if (*self.shape_for(rows, frames), n_steps) in self.captured:
            return prepare(self, rows, frames, n_steps, device, dtype)
        return log("flow", (rows, frames, n_steps), lambda: prepare(self, rows, frames, n_steps, device, dtype))

    def counted_step(self, b, attend, use_top_k, use_top_p):
        if self.use_graphs and self.lazy and (b, attend, use_top_k, use_top_p) not in self.graphs:
            EAGER["decode_steps"] += 1
        return run_step(self, b, attend, use_top_k, use_top_p)

    def counted_solve(self, noise, mu, mask, spks, cond, n_steps):
        if self.lazy and (*self.shape_for(mu.shape[0], mu.shape[2]), n_steps) not in self.captured:
            EAGER["flow_solves"] += 1
        return solve(self, noise, mu, mask, spks, cond, n_steps)

    from cadence.engine.audio_runner import AudioRunner
    from cadence.engine.shapes import round_up
    mel_batch, vocode_batch = AudioRunner.mel_batch, AudioRunner.vocode_batch
    seen: set = set()

    def batch(kind, rows, frames, fn):
        shape = (kind, rows, frames)
        new = shape not in seen
        seen.add(shape)
        t = time.perf_counter()
        out = fn()
        torch.cuda.current_stream().synchronize()  # the audio worker's stream only: T3's steps go on beside it
        EVENTS.append({"t": round(t - T0, 4), "kind": kind, "key": [rows, frames], "s": time.perf_counter() - t,
                       "new_shape": new, "wanted": None, "busy": None})
        return out

    def timed_mel_batch(self, items, n_steps=None):
        if len(items) == 1:
            return mel_batch(self, items, n_steps)
        frames = round_up(max(v.prompt_tokens.shape[1] + t.numel() for t, v, _ in items), 32)
        return batch("s3gen_flow", len(items), frames, lambda: mel_batch(self, items, n_steps))

    def timed_vocode_batch(self, mels, rngs):
        if len(mels) == 1:
            return vocode_batch(self, mels, rngs)
        frames = round_up(max(m.shape[-1] for m in mels), 64)
        return batch("s3gen_vocoder", len(mels), frames, lambda: vocode_batch(self, mels, rngs))
    AudioRunner.mel_batch, AudioRunner.vocode_batch = timed_mel_batch, timed_vocode_batch
    warmup.BackgroundWarmup.run_one = timed_run_one
    BatchDecoder.capture, cfm_graph.CFMGraphs.prepare = timed_capture, timed_prepare
    BatchDecoder.run_step, cfm_graph.CFMGraphs.solve = counted_step, counted_solve


def level(tts, bodies, clients) -> dict:
    """The bench's engine-only level (one-piece, watermark on, every request to its token count), with its start."""
    start = since()
    return {"start_s": start, **engine_level(tts, bodies, clients, watermark=True, ignore_eos=True)}


def summary(events) -> dict:
    out = {}
    for e in events:
        k = (f"{e['kind']}_{'new' if e['new_shape'] else 'seen'}_shape" if "new_shape" in e
             else f"{e['kind']}_{'wanted' if e['wanted'] else 'planned'}")
        n, s = out.get(k, (0, 0.0))
        out[k] = (n + 1, round(s + e["s"], 3))
    return {k: {"captures": n, "seconds": s} for k, (n, s) in out.items()}


def main() -> None:
    ckpt, out = sys.argv[1], sys.argv[2]
    clients, per_client, tokens = (int(a) for a in (sys.argv[3:6] + ["8", "2", "300"][len(sys.argv[3:6]):]))
    if len(sys.argv) > 6:
        warmup.PLANNED_SHARE = float(sys.argv[6])
    stream = len(sys.argv) > 7 and sys.argv[7] == "streamed"
    instrument()
    phases = {"imports_s": since()}
    tts = TTS.from_dir(ckpt, device="cuda" if torch.cuda.is_available() else "cpu", watermark=True)
    phases["loaded_s"] = since()
    tts.engine.warmup(background=True)
    phases["planned_s"] = since()
    from cadence import watermark
    watermark.preload(tts.watermark_device)
    phases["perth_s"] = since()
    from cadence.server.app import FIRST_GRAPHS_MAX_S
    tts.engine.warm.wait_first(FIRST_GRAPHS_MAX_S)
    phases["ready_s"] = since()
    pending_at_ready = tts.engine.load["warming"]
    bodies = level_bodies(clients * per_client, 7, tokens, stream, "mp3", request_tokens=tokens)
    first = level(tts, bodies, clients)
    first["eager"] = dict(EAGER)
    first["captures"] = summary(e for e in EVENTS if first["start_s"] <= e["t"] <= first["start_s"] + first["wall_s"])
    workers = [w.process.usable for w in tts.engine.post.workers]
    tts.engine.call(tts.engine.warm.tasks.clear).result()  # the rest of the plan: not what these requests use
    warm = [level(tts, bodies, clients) for _ in range(2)]
    for lv in warm:
        lv["batches"] = summary(e for e in EVENTS if lv["start_s"] <= e["t"] <= lv["start_s"] + lv["wall_s"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"checkpoint": ckpt, "family": tts.family.name, "device": device, "stream": stream,
              "planned_share": warmup.PLANNED_SHARE, "clients": clients, "requests": len(bodies), "tokens": tokens,
              "phases": phases, "graphs_planned_at_ready": pending_at_ready, "watermark_workers_up": workers,
              "first": first, "warm": warm, "latency_ratio": first["latency_p50_s"] / warm[-1]["latency_p50_s"],
              "events": EVENTS}
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=1), flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    tts.close()


if __name__ == "__main__":
    main()
