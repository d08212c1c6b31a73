"""The batched engine alone under closed-loop load (GPU): CLIENTS client threads each sending its requests one after
another, as `cadence bench serve`'s engine-only replay does, on one warmed engine, alternating scheduling variants:
the admission cap per round (`admission.ADMIT_MAX`), whether finished requests' S3Gen batches take GPU turns
(`AudioWorker.one_piece_turns`), whether finished requests leave S3Gen a length group at a time or once the whole
backlog is rendered (`AudioWorker.deliver_by_group`), and whether 64-row decode steps read the voices' prompt keys
once per voice (`SharedPrompts`, cascade attention: Turbo on CUDA; SHARED_VOICES sets how many voices) or each row
its own (the decode graphs are recaptured when that changes). VARIANTS (comma-separated names, default all) picks
some. x real time and the engine's counters of each run.
Usage: python scripts/engine_ab.py CHECKPOINT_DIR OUT.json [CLIENTS] [REQUESTS] [TOKENS] [ROUNDS]"""

import json
import os
import sys

import torch

from cadence.bench.engine_replay import engine_level
from cadence.bench.serve import level_bodies
from cadence.engine import admission, audio_worker, shared_prompts
from cadence.engine.warmup import default_filter_flags
from cadence.tts import TTS

# name: (admissions per round, S3Gen turns, delivery by group, shared prompt keys)
VARIANTS = {"default": (16, False, True, True),
            "own prompt copies": (16, False, True, False),
            "whole backlog at once": (16, False, False, True),
            "admit 64": (64, False, True, True),
            "S3Gen turns": (16, True, True, True)}


def read_shared_prompts(tts, shared: bool) -> None:
    """Point the decode steps at the shared store or at the rows' own copies, and recapture their graphs (the
    choice is captured in them). Runs on the engine's GPU thread."""
    dec = tts.engine.decoder
    if dec.prompts is None or (dec.prompts.__dict__.get("for_rows") is None) == shared:
        return
    if shared:
        del dec.prompts.for_rows
    else:
        dec.prompts.for_rows = lambda rows: None
    for g in dec.graphs.values():
        g.reset()
    dec.graphs.clear()
    dec.pool = torch.cuda.graph_pool_handle()  # the old pool went with its last graph
    dec.warmup(flags=default_filter_flags(tts.family))


def main(ckpt: str, out: str, clients: int = 64, requests: int = 128, tokens: int = 300, rounds: int = 2) -> None:
    shared_prompts.SHARED_VOICES = int(os.environ.get("SHARED_VOICES", shared_prompts.SHARED_VOICES))
    tts = TTS.from_dir(ckpt, device="cuda", watermark=True)
    tts.engine.warmup()
    bodies = level_bodies(requests, 1, tokens, False, "pcm", tokens)
    names = os.environ.get("VARIANTS", ",".join(VARIANTS)).split(",")
    res = {"clients": clients, "requests": requests, "tokens": tokens, "family": tts.family.name, "runs": []}
    engine_level(tts, bodies[:clients], clients, True)  # warm: the first full admission's allocations
    for r in range(rounds):
        for name in names:
            admit, turns, by_group, shared = VARIANTS[name]
            admission.ADMIT_MAX, audio_worker.AudioWorker.one_piece_turns = admit, turns
            audio_worker.AudioWorker.deliver_by_group = by_group
            tts.engine.call(lambda: read_shared_prompts(tts, shared)).result()
            lv = engine_level(tts, bodies, clients, True)
            res["runs"].append({"variant": name, "round": r, **lv})
            e = lv["engine"]
            print(f"{name:32s} {lv['x_realtime']:6.1f}x  wall {lv['wall_s']:.2f} s  mean batch {e['mean_batch']:.1f}  "
                  f"t3 {e['t3_busy_s']:.2f} s  s3gen {e['s3gen_busy_s']:.2f} s  prefill {e['prefill_busy_s']:.2f} s",
                  flush=True)
    json.dump(res, open(out, "w"), indent=1)
    tts.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
