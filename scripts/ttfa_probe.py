"""Where time to first audio goes when N streams start together (the engine as it is, default config).

1. The first-window render by stage, B streams at once (device synced around each stage): host preparation,
   flow encoder, CFM solve, vocoder.
2. The engine's timeline for N streams submitted at once: admissions, decode rounds, window renders (turns),
   and each stream's first chunk handed to postprocessing and delivered.
Usage: python scripts/ttfa_probe.py CKPT [N,N...] [out.json] [old]
"old": captures through torch.cuda.graph (device sync and allocator cache emptied before each) and no warm-up
bursts, as before session 5, for a side-by-side figure."""
import json
import statistics
import sys
import threading
import time

import torch

from cadence.engine import streaming as sm
from cadence.engine.request import Request
from cadence.bench.offline import LONG_TEXT
from cadence.engine.rng import RequestRNG
from cadence.sampling_params import SamplingParams
from cadence.tts import TTS
from probe_timing import recorded

ck = sys.argv[1]
if "old" in sys.argv[4:]:
    import cadence.engine.batch_t3 as bt
    import cadence.engine.cfm_graph as cg
    import cadence.engine.engine as en
    import cadence.engine.graphed as gr
    import cadence.engine.t3_graph as tg

    def old_capture(fn, pool=None, warmup=None):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.inference_mode():
            (warmup or fn)()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(g, pool=pool, capture_error_mode="thread_local"):
            out = fn()
        return g, out
    for mod in (bt, cg, gr, tg):
        mod.capture = old_capture
    en.warm_bursts = lambda engine: None
levels = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "8,16").split(",")]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
tts = TTS.from_dir(ck, device=DEV, watermark=False)
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
t0 = time.perf_counter()
tts.engine.warmup(1000)
report: dict = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "warmup_s": time.perf_counter() - t0}
runner, voice, dev = tts.audio_runner, tts.default_voice, tts.audio_runner.device
flow = tts.s3gen.flow
KEEP = dict(zip(("prompt_keep", "history_keep"), tts.config.stream_context_tokens()))
stage_ms: dict[str, list] = {}


def timed_stage(name, fn):
    return recorded(fn, sync, stage_ms.setdefault(name, []))


# 1. stages of a first window (16 tokens + 3 lookahead), B streams
toks = torch.randint(0, 6561, (19,), generator=torch.Generator().manual_seed(0)).tolist()
orig_encode = flow.encode
graphs = runner.cfm_graphs
stages = {}
for B in (1, 4, 8, 16) if DEV == "cuda" else (1, 2):
    stage_ms.clear()
    flow.encode = timed_stage("encoder", orig_encode)
    if graphs is not None:
        graphs.solve = timed_stage("cfm", type(graphs).solve.__get__(graphs))
    for _ in range(4):
        states = [sm.StreamState(voice.to(dev), RequestRNG(i, dev), **KEEP) for i in range(B)]
        sync()
        t = time.perf_counter()
        sm._flow_windows(runner, [(s, toks, False) for s in states])
        sync()
        stage_ms.setdefault("flow_total", []).append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        sm._vocode_windows(runner, [(s, False) for s in states])
        sync()
        stage_ms.setdefault("vocoder", []).append((time.perf_counter() - t) * 1e3)
    flow.encode = orig_encode
    if graphs is not None:
        del graphs.solve
    stages[B] = {k: round(statistics.median(v[1:]), 2) for k, v in stage_ms.items()}
    stages[B]["host_prep"] = round(stages[B]["flow_total"] - stages[B]["encoder"] - stages[B].get("cfm", 0), 2)
    print("first window, B =", B, stages[B], flush=True)
report["first_window_stages_ms"] = stages

# 2. the engine's timeline
eng = tts.engine
log: list = []
zero = [0.0]


def stamp(what, **kw):
    log.append({"t_ms": round((time.perf_counter() - zero[0]) * 1e3, 1), "what": what, **kw})


def wrap(obj, name, before=None, after=None):
    fn = getattr(obj, name)

    def w(*a, **k):
        if before:
            before(*a)
        out = fn(*a, **k)
        if after:
            after(*a)
        return out
    setattr(obj, name, w)


wrap(eng, "_admit", before=lambda adm: stamp("admit_start", n=len(adm)), after=lambda adm: stamp("admit_end", n=len(adm)))
wrap(eng, "_decode", after=lambda: stamp("decode_round", running=len(eng._running)))
wrap(eng.audio, "_windows_in_turn", before=lambda todo: stamp("windows_start", n=len(todo), first=sum(e[3] for e in todo)),
     after=lambda todo: stamp("windows_end", n=len(todo)))
first_seen: set = set()


def on_submit(r, wav, tokens, s3_s, final):
    if id(r) not in first_seen:
        first_seen.add(id(r))
        stamp("first_chunk_to_post")


wrap(eng.post, "submit", before=on_submit)
timelines = {}
for N in levels:
    for rep in range(3):
        log.clear()
        first_seen.clear()
        zero[0] = time.perf_counter()
        handles = [tts.submit(Request(LONG_TEXT, voice,
                                      SamplingParams(seed=100 * rep + i, max_new_tokens=250), speech_tokens_only=True,
                                      ignore_eos=True, stream=True)) for i in range(N)]
        ttfa = []

        def listen(h):
            t_first = None
            for _ in h:
                if t_first is None:
                    t_first = time.perf_counter() - zero[0]
            ttfa.append(round(t_first * 1e3, 1))
        listeners = [threading.Thread(target=listen, args=(h,)) for h in handles]
        for t in listeners:
            t.start()
        for t in listeners:
            t.join()
        stamp("all_done")
        ev = [e for e in log if e["t_ms"] <= max(ttfa) + 1]
        timelines[f"{N}_{rep}"] = {"ttfa_ms": sorted(ttfa), "ttfa_p50_ms": statistics.median(ttfa), "events": ev}
        print(f"N={N} rep={rep} ttfa p50 {statistics.median(ttfa):.1f} ms, all {sorted(ttfa)}", flush=True)
        print("  " + " | ".join(f"{e['t_ms']:.0f} {e['what']}" + (f"({e.get('n', e.get('running', ''))})")
                                for e in ev if e["what"] != "first_chunk_to_post"), flush=True)
report["timelines"] = timelines
json.dump(report, open(sys.argv[3] if len(sys.argv) > 3 else "/tmp/ttfa_probe.json", "w"), indent=1)
