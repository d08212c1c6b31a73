"""Where a clip's peak device memory goes (GPU): allocated memory after load, then for one clip of the given token
count the allocated memory on entry, the peak inside and the allocated on exit of each stage (T3 prefill and
decode, the flow, the vocoder), and the largest live tensors at the vocoder's peak.
Usage: python scripts/memory_probe.py CHECKPOINT_DIR TOKENS OUT.json [MEMORY_PLAN]"""

import json
import sys

import torch

from cadence.tts import TTS

MB = 2 ** 20


def main(ckpt: str, tokens: int, out: str, plan: str = "bf16") -> None:
    torch.cuda.reset_peak_memory_stats()
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False, memory_plan=plan)
    res = {"device": torch.cuda.get_device_name(), "plan": plan, "tokens": tokens,
           "after_load_mb": torch.cuda.memory_allocated() / MB, "load_peak_mb": torch.cuda.max_memory_allocated() / MB,
           "modules_mb": {}, "stages": []}
    for name, m in (("t3", tts.t3), ("flow", tts.s3gen.flow), ("vocoder", tts.s3gen.mel2wav)):
        res["modules_mb"][name] = sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()]
                                      if t.is_cuda) / MB
    for d in tts.t3_runner.decoders:
        res["modules_mb"][f"t3_graph_kv_{d.rows}x{d.max_len}"] = (d.k.numel() + d.v.numel()) * d.k.element_size() / MB

    def staged(obj, attr, label):
        fn = getattr(obj, attr)

        def wrapped(*a, **k):
            torch.cuda.synchronize()
            entry = torch.cuda.memory_allocated() / MB
            torch.cuda.reset_peak_memory_stats()
            r = fn(*a, **k)
            torch.cuda.synchronize()
            res["stages"].append({"stage": label, "entry_mb": entry, "peak_mb": torch.cuda.max_memory_allocated() / MB,
                                  "exit_mb": torch.cuda.memory_allocated() / MB})
            return r
        setattr(obj, attr, wrapped)
    text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark green forest."
    kw = dict(seed=0, max_new_tokens=tokens, speech_tokens_only=True, watermark=False)
    tts.generate(text, **kw)  # warm-up: graphs for this length
    torch.cuda.synchronize()
    res["after_warmup_mb"] = torch.cuda.memory_allocated() / MB
    staged(tts, "prefill", "t3 prefill")
    staged(tts.t3_runner, "generate", "t3 decode")
    staged(tts.audio_runner, "mel", "flow (mel)")
    staged(tts.audio_runner, "vocode", "vocoder")
    torch.cuda.reset_peak_memory_stats()
    audio = tts.generate(text, **kw)
    res["clip_s"] = audio.duration
    res["generate_peak_mb"] = max(s["peak_mb"] for s in res["stages"])
    for s in res["stages"]:
        print(f"{s['stage']:12s} entry {s['entry_mb']:8.1f}  peak {s['peak_mb']:8.1f}  exit {s['exit_mb']:8.1f} MB")
    print(json.dumps({k: v for k, v in res.items() if k != "stages"}, indent=1))
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
