"""The batched T3 decode step (GPU) with the voices' prompt keys read from one shared copy (`SharedPrompts`) or from
each row's own: device time of one captured step by batch size, every row of one voice (or of VOICES voices, the
store's entries), row lengths spread as 300-token requests' are over their decoding (prompt + text + 0..300
speech positions). Usage: python scripts/shared_prompt_probe.py CHECKPOINT_DIR OUT.json [VOICES]"""

import json
import sys

import torch

from cadence.engine import shared_prompts
from cadence.random_checkpoint import synthetic_voice
from cadence.tts import TTS
from probe_timing import replay_ms


def main(ckpt: str, out: str, voices: int = 1) -> None:
    shared_prompts.SHARED_VOICES = max(voices, 1, shared_prompts.SHARED_VOICES)
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
    engine = tts.engine
    prompts = [tts.voice_prompt(tts.default_voice)]
    prompts += [tts.voice_prompt(tts.prepare_voice(synthetic_voice(seconds=12.0, seed=i), 24000))
                for i in range(1, voices)]
    engine.call(lambda: probe(tts, engine.decoder, prompts, out)).result()  # on the GPU thread
    tts.close()


def probe(tts, dec, prompts, out: str) -> None:
    d = tts.family.defaults
    flags = (d["top_k"] > 0, d["top_p"] < 1.0)
    P = max(p[1].shape[1] for p in prompts)
    res = {"device": torch.cuda.get_device_name(), "family": tts.family.name, "voices": len(prompts),
           "prompt_positions": [p[1].shape[1] for p in prompts], "steps": []}
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for slot in range(dec.slots):
            dec.prompts.attach(slot, dec._rows(slot), prompts[slot % len(prompts)], dec.k, dec.v)
        live = P + 40 + torch.randint(0, 300, (dec.slots * dec.per_slot,), generator=g)  # prompt, text, speech
        attend = dec.length_for(int(live.max()) + 1)
        dec.active.fill_(1)
        res["attend"], res["mean_live_positions"] = attend, float(live.float().mean())
        for b in [s for s in dec.sizes if s >= 8]:
            for shared in (False, True):
                if shared:
                    del dec.prompts.for_rows
                else:
                    dec.prompts.for_rows = lambda rows: None
                key = (b, attend, *flags)
                if key in dec.graphs:
                    dec.graphs.pop(key).reset()
                dec.pool = torch.cuda.graph_pool_handle()  # a pool goes with its last graph: a new one each time
                dec.pos.copy_(live.to(dec.pos.device))
                dec.capture(key)
                dec.pos.copy_(live.to(dec.pos.device))  # a replay advances the rows: each timing starts alike
                ms = replay_ms(dec.graphs[key], 30)
                res["steps"].append({"batch": b, "shared": shared, "ms": ms, "us_per_request": 1000 * ms / b})
                print(res["steps"][-1], flush=True)
        for slot in range(dec.slots):
            dec.prompts.detach(slot, dec._rows(slot))
        dec.active.zero_()
    for b in sorted({s["batch"] for s in res["steps"]}):
        own, shared = (next(s["ms"] for s in res["steps"] if s["batch"] == b and s["shared"] == x) for x in (0, 1))
        print(f"batch {b}: own copies {own:.3f} ms, shared {shared:.3f} ms ({own / shared:.2f}x)", flush=True)
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
