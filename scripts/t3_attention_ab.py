"""Single-request T3 decode speed with the one-query attention as SDPA over the length bucket (chunk 0) and as the
split prefix kernel (`T3GraphDecoder.attention_chunk`), side by side in one process (GPU).
Usage: python scripts/t3_attention_ab.py CHECKPOINT_DIR [CHUNKS, default 0,64,32] [TOKENS, default 300]"""

import json
import sys
import time

import torch

from cadence.engine.t3_graph import T3GraphDecoder
from cadence.tts import TTS


def main(ckpt: str, chunks: list[int], tokens: int) -> None:
    tts = TTS.from_dir(ckpt, device="cuda", watermark=False)
    voice = tts.default_voice
    prefill = tts.prefill("Hello there, this is a decode speed test of a single request.", voice, tts.params())
    rows = []
    for chunk in chunks * 2:  # each setting twice, interleaved
        T3GraphDecoder.attention_chunk = chunk
        tts.t3_runner.release()
        p = tts.params(seed=1, max_new_tokens=tokens)
        tts.t3_runner.generate(prefill, p, 1, speech_only=True)  # captures this setting's graphs
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = sum(len(tts.t3_runner.generate(prefill, p, s, speech_only=True).tokens) for s in range(5))
        torch.cuda.synchronize()
        rows.append({"chunk": chunk, "tokens": n, "tokens_per_s": round(n / (time.perf_counter() - t0), 1)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "0,64,32").split(",")],
         int(sys.argv[3]) if len(sys.argv) > 3 else 300)
