"""Time to first audio of single streams in a row, with the default GIL switch interval and a short one."""
import sys
import time

from cadence.engine.request import Request
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS

tts = TTS.from_dir(sys.argv[1], device="cuda", watermark=False)
tts.engine.warmup(1000)
text = "Hello there, this is a probe of streaming latency."
for interval in (sys.getswitchinterval(), 0.0002):
    sys.setswitchinterval(interval)
    for i in range(4):
        t0 = time.perf_counter()
        h = tts.submit(Request(text, tts.default_voice, SamplingParams(seed=i, max_new_tokens=250),
                               speech_tokens_only=True, ignore_eos=True, stream=True))
        times = []
        for c in h:
            times.append(round((time.perf_counter() - t0) * 1e3))
        print(f"switch {interval * 1e3:.1f} ms: chunk arrival ms {times}", flush=True)
