"""Where one-piece S3Gen time goes for a batch of finished requests (the server's throughput at 32 clients is
bound by it): flow encoder, CFM solve (eager padded batch vs one graph per request), vocoder (fp32 vs bf16
convolutions), for B requests of the bench's lengths.
Usage: python scripts/s3gen_batch_probe.py CKPT [B,B...] [out.json]"""
import json
import sys

import torch

from cadence.engine.rng import RequestRNG
from cadence.tts import TTS
from probe_timing import median_ms, recorded

ck = sys.argv[1]
sizes = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "4,8,16").split(",")]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
tts = TTS.from_dir(ck, device=DEV, watermark=False)
tts.engine.warmup(1000)  # the single-request CFM graphs the small-group path replays
runner, voice = tts.audio_runner, tts.default_voice
flow = tts.s3gen.flow
report: dict = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "batches": {}}


def timed(fn, reps=3):
    return median_ms(fn, sync, reps)


gen = torch.Generator().manual_seed(0)
for B in sizes:
    lengths = torch.randint(75, 751, (B,), generator=gen).tolist()  # the serve bench's max_new_tokens range
    items = [(torch.randint(0, 6561, (n,), generator=gen), voice, RequestRNG(i, DEV)) for i, n in enumerate(lengths)]
    row = {"tokens": lengths, "audio_s": sum(lengths) / 25}
    row["flow_batch_eager_ms"] = timed(lambda: runner.mel_batch(items))
    encode = flow.encode
    spent = []
    flow.encode = recorded(encode, sync, spent)
    runner.mel_batch(items)
    flow.encode = encode
    row["flow_encoder_ms"] = round(spent[0], 1)
    row["flow_one_by_one_graphs_ms"] = timed(lambda: [runner.mel(*it) for it in items])
    mels = runner.mel_batch(items)
    rngs = [it[2] for it in items]
    row["vocoder_batch_ms"] = timed(lambda: runner.vocode_batch(mels, rngs))
    row["synthesize_batch_ms"] = timed(lambda: runner.synthesize_batch(items))
    row["x_realtime_s3gen_only"] = round(row["audio_s"] / (row["synthesize_batch_ms"] / 1e3), 1)
    report["batches"][B] = row
    print(B, row, flush=True)
json.dump(report, open(sys.argv[3] if len(sys.argv) > 3 else "/tmp/s3gen_batch_probe.json", "w"), indent=1)
