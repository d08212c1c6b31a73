"""The library's first burst (GPU): load a checkpoint with `TTS.from_dir` and, with no warm-up call, submit CLIENTS
requests of TOKENS forced speech tokens at once (one piece, then as streams), three rounds each; the third round of
the same work is the warm figure the first is compared with (its shapes met twice already). Reports each round's
p50 latency (one piece) and p50 time to first audio (streams). MODE: "default" (what `TTS.engine` does on its own),
or "planned" (`tts.engine.warmup(background=True, first_graphs_s=3)` right after the load, as `cadence serve` does).
Usage: python scripts/library_first_burst.py CHECKPOINT_DIR OUT.json [CLIENTS] [TOKENS] [MODE]"""

import json
import statistics
import sys
import threading
import time

import torch

from cadence.engine.request import Request
from cadence.tts import TTS


def burst(tts, clients: int, tokens: int, stream: bool, seed0: int) -> dict:
    text = "The first requests a program sends after loading the model, all at once."
    handles = [tts.submit(Request(text, None, tts.params(seed=seed0 + i, max_new_tokens=tokens), watermark=False,
                                  speech_tokens_only=True, ignore_eos=True, stream=stream)) for i in range(clients)]
    t0 = time.perf_counter()
    first, done = [0.0] * clients, [0.0] * clients

    def drain(i: int) -> None:
        for _ in handles[i]:
            if not first[i]:
                first[i] = time.perf_counter() - t0
        done[i] = time.perf_counter() - t0
    threads = [threading.Thread(target=drain, args=(i,)) for i in range(clients)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return {"first_audio_p50_s": round(statistics.median(first), 3), "latency_p50_s": round(statistics.median(done), 3)}


def main() -> None:
    ck, out = sys.argv[1], sys.argv[2]
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    mode = sys.argv[5] if len(sys.argv) > 5 else "default"
    t0 = time.perf_counter()
    tts = TTS.from_dir(ck, device="cuda" if torch.cuda.is_available() else "cpu", watermark=False)
    res = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "mode": mode, "clients": clients, "tokens": tokens,
           "load_s": round(time.perf_counter() - t0, 2)}
    if mode == "planned":
        t1 = time.perf_counter()
        tts.engine.warmup(background=True, first_graphs_s=3)
        res["planned_s"] = round(time.perf_counter() - t1, 2)
    for kind, stream in (("one_piece", False), ("streams", True)):
        res[kind] = [burst(tts, clients, tokens, stream, 100 * r) for r in range(3)]
        metric = "first_audio_p50_s" if stream else "latency_p50_s"
        res[kind + "_first_vs_warm"] = round(res[kind][0][metric] / res[kind][2][metric], 2)
        print(kind, res[kind], res[kind + "_first_vs_warm"], flush=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
