"""The `cadence` command line's arguments (the commands themselves are in `cadence.cli`)."""

from __future__ import annotations

import argparse
import os

from .sampling_params import SamplingParams

DEFAULT_MODEL = os.environ.get("CADENCE_MODEL", "ResembleAI/chatterbox")


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def seconds_or_all(text: str):
    """A flag value of seconds, or 'all' (no limit: None in the config)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'all', got {text!r}") from None


def _add_stream_context(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--stream-prompt-s", type=seconds_or_all, default=default,
                   help="streaming: seconds of the voice prompt each window conditions on, or 'all' (default 4)")
    p.add_argument("--stream-history-s", type=seconds_or_all, default=default,
                   help="streaming: seconds of audio already sent each window conditions on, or 'all' (default 2)")
    p.add_argument("--stream-windows", default=None, metavar="N,N,...",
                   help="streaming: new speech tokens of each window in turn, the last repeated (25 = 1 s; default "
                        "16,16,32,64,96); `cadence doctor --measure` estimates one that plays without gaps here")
    p.add_argument("--first-audio-priority", action=argparse.BooleanOptionalAction, default=None,
                   help="streaming: hold T3's decode while windows that bring first audio render (default on)")
    p.add_argument("--overlap-audio", action=argparse.BooleanOptionalAction, default=None,
                   help="let S3Gen's stream windows run beside T3's decode instead of taking turns (default off)")


def _add_knobs(p: argparse.ArgumentParser) -> None:
    """The sampling knobs, unset by default: the loaded model's family fills its own defaults (original
    model / Turbo), and refuses a knob its model does not have."""
    from .family import ENGLISH, TURBO
    from .text.multilingual import LANGUAGES
    e, t = ENGLISH.defaults, TURBO.defaults
    p.add_argument("--exaggeration", type=float, default=None,
                   help="emotion intensity 0..2 (default: the voice's; not a Turbo knob)")
    p.add_argument("--cfg-weight", type=float, default=None,
                   help=f"classifier-free guidance weight (default {e['cfg_weight']}; not a Turbo knob)")
    p.add_argument("--temperature", type=float, default=None, help=f"sampling temperature (default {e['temperature']})")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help=f"repetition penalty >= 1 (default {e['repetition_penalty']})")
    p.add_argument("--min-p", type=float, default=None,
                   help=f"min-p filter, 0 disables (default {e['min_p']}; not a Turbo knob)")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"nucleus filter, 1 disables (default {e['top_p']}; Turbo {t['top_p']})")
    p.add_argument("--top-k", type=int, default=None,
                   help=f"top-k filter, 0 disables (default {e['top_k']}; Turbo {t['top_k']})")
    p.add_argument("--max-new-tokens", type=int, default=SamplingParams().max_new_tokens,
                   help="speech-token limit (25 = 1 s)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a reproducible result")
    p.add_argument("--language", default=None,
                   help="the text's language id (the multilingual model needs one): " + ", ".join(LANGUAGES))
    p.add_argument("--alignment-stop", action=argparse.BooleanOptionalAction, default=None,
                   help="multilingual model: end-of-speech rules that watch the attention (EOS held until the text "
                        "is read, forced on a long tail or repetition; default on); --no-alignment-stop lets the "
                        "model alone decide")


def build_parser() -> argparse.ArgumentParser:
    # imported here, not with this module: `cadence serve` starts its helpers before anything imports torch
    from .audio.encode import FORMATS
    from .family import FAMILIES, TURBO_TAGS
    ap = argparse.ArgumentParser(prog="cadence", description="Fast Chatterbox text-to-speech.")
    from . import __version__
    ap.add_argument("--version", action="version", version=f"cadence {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    say = sub.add_parser("say", help="synthesize text to an audio file (wav, flac, mp3, opus, ogg, aac, pcm)",
                         epilog="Chatterbox Turbo reads paralinguistic tags in the text, each one token: "
                                + " ".join(TURBO_TAGS) + '. Example: "Well [laugh] that was fun."')
    say.add_argument("text", nargs="?", help="the text to speak (or --file)")
    say.add_argument("--file", help="a text file of any length (- for stdin): split into chunks, rendered "
                                    "together, resumable")
    say.add_argument("-o", "--output", required=True, help="output path; format from the extension "
                                                            "(.wav .flac .mp3 .opus .ogg .aac .pcm); - for stdout")
    say.add_argument("--format", choices=FORMATS, default=None,
                     help="output format (default: from the extension; wav for -o -)")
    say.add_argument("--voice-audio", help="reference recording to clone (wav/flac/mp3/ogg, any rate)")
    say.add_argument("--voice", help="a library voice by name ('default': the checkpoint's built-in voice)")
    say.add_argument("--library", help="voice library directory (default: $CADENCE_VOICES or the user data dir)")
    say.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub repo id")
    say.add_argument("--family", choices=sorted(FAMILIES), default=None,
                     help="which model of a hub repo that holds several (ResembleAI/chatterbox: english, multilingual)")
    say.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (CUDA if present)")
    say.add_argument("--no-watermark", dest="watermark", action="store_false", help="skip the Perth watermark")
    say.add_argument("--watermark-device", default=None, help="where the watermark runs: cpu (default), auto or cuda")
    say.add_argument("--memory-plan", default="auto", help="auto, fp32, bf16, bf16-lowmem, int8, offload (CUDA), cpu-int8, cpu-bf16 (CPU)")
    say.add_argument("--vram-budget", help="with --memory-plan auto: e.g. 1.5GB, or auto (90%% of free VRAM)")
    say.add_argument("--dtype", default=None, help="T3 and flow weights: auto (the plan's), bfloat16, float32, float16")
    say.add_argument("--vocoder-dtype", default=None, help="HiFT weights: auto (the plan's), float32 or bfloat16")
    say.add_argument("--prepare-device", default=None, help="where voices are prepared: auto, cuda or cpu")
    say.add_argument("--eager", dest="enforce_eager", action="store_const", const=True, default=None,
                     help="no CUDA graphs (debugging, parity)")
    say.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="torch.compile the models' repeated blocks (a minute's start on a cold cache)")
    _add_knobs(say)
    say.add_argument("--max-batch", type=int, default=None,
                     help="with --file: chunks decoded together (KV slots; default: sized to VRAM)")
    say.add_argument("--kv-slot-len", type=int, default=None, help="with --file: KV positions per slot (default 1536)")
    say.add_argument("--voice-cache-mb", type=int, default=None, help="device memory for resident voices (256)")
    say.add_argument("--cpu-threads", type=int, default=None, help="threads of the CPU math (default: one per core)")
    say.add_argument("--speed", type=float, default=1.0, help="speaking rate, 0.25-4, pitch kept (default 1)")
    b = sub.add_parser("bench", help="measure load, voice preparation, T3, S3Gen, RTF and VRAM")
    b.add_argument("target", nargs="?", choices=["serve", "soak", "plot"],
                   help="'serve': HTTP load on a cadence serve process; 'soak': a bounded soak + cancellation storm; "
                        "'plot': a chart of --reference results (--results, --plot)")
    b.add_argument("--results", nargs="+", help="with plot: `cadence bench --reference` JSON files")
    b.add_argument("--seconds", type=float, default=600, help="with soak: how long the clients run")
    b.add_argument("--clients", type=int, default=16, help="with soak: concurrent clients")
    b.add_argument("--requests-per-client", type=int, default=2, help="with serve: requests each client sends")
    b.add_argument("--level-timeout-s", type=float, default=None,
                   help="with serve: give a level up after this long, recording the server's thread stacks")
    b.add_argument("--server-log", help="with serve: write the server's output to this file (default: discarded)")
    b.add_argument("--modes", choices=("both", "streamed", "one-piece"), default="both",
                   help="with serve: streamed requests, one-piece ones, or both (default)")
    b.add_argument("--format", choices=FORMATS, default="mp3", help="with serve: response_format (default mp3, the "
                                                                     "OpenAI default)")
    b.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub repo id")
    b.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (CUDA if present)")
    b.add_argument("--voice-audio", help="reference recording (default: a built-in synthetic 10 s clip)")
    b.add_argument("--reference", action="store_true", help="also run chatterbox-tts side by side (the same family)")
    b.add_argument("--family", choices=sorted(FAMILIES), default=None,
                   help="the model family to measure: without --model, its hub repo; with one, checked against it")
    b.add_argument("--watermark", action="store_true", help="apply the Perth watermark (counted in total and RTF)")
    b.add_argument("--watermark-device", default=None, help="with --watermark: cpu (default), auto or cuda")
    b.add_argument("--client", choices=("openai", "httpx"), default="openai",
                   help="with serve: the OpenAI Python client (default) or plain httpx")
    b.add_argument("--cold-probe", type=int, default=8,
                   help="with serve: clients sending 2 requests each the moment the server is ready, and again "
                        "once warm (0: skip)")
    b.add_argument("--request-tokens", type=int, default=None,
                   help="with serve: every request's max_new_tokens (default: drawn from 75..--long-tokens)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--short-tokens", type=int, default=75, help="short clip: T3 tokens (75 = 3 s)")
    b.add_argument("--long-tokens", type=int, default=750, help="long clip: T3 tokens (750 = 30 s)")
    b.add_argument("--dtype", default="auto", help="T3 and flow weights: auto, bfloat16, float32, float16")
    b.add_argument("--vocoder-dtype", default="auto", help="HiFT weights: auto (the plan's), float32 or bfloat16")
    b.add_argument("--memory-plan", default="auto", help="auto, fp32, bf16, bf16-lowmem, int8, offload (CUDA), cpu-int8, cpu-bf16 (CPU)")
    b.add_argument("--vram-budget", help="with --memory-plan auto: e.g. 1.5GB, or auto (90%% of free VRAM)")
    b.add_argument("--cpu-threads", type=int, default=None, help="threads of the CPU math (default: one per core)")
    b.add_argument("--max-batch", type=int, default=None,
                   help="with --concurrency, --stream and serve: KV slots (default: sized to VRAM)")
    b.add_argument("--kv-slot-len", type=int, default=None,
                   help="with --concurrency, --stream and serve: KV positions per slot (default 1536)")
    b.add_argument("--encode-workers", type=int, default=None, help="with serve: the server's encoding threads")
    b.add_argument("--ray", action="store_true",
                   help="with serve: also Ray Serve (one replica) on the same settings beside the plain server, "
                        "for Serve's overhead against the plain server (extra cadence-tts[ray])")
    b.add_argument("--ray-proxy", choices=("serve", "haproxy"), default="serve",
                   help="with serve --ray: the Serve server's --ray-proxy")
    b.add_argument("--ray-rounds", type=int, default=2,
                   help="with serve --ray: rounds of the levels run against both servers in turn, both up at once "
                        "(default 2; medians over rounds)")
    b.add_argument("--engine-only", action=argparse.BooleanOptionalAction, default=True,
                   help="with serve: replay the levels on the engine alone afterwards, for the HTTP share (default on)")
    b.add_argument("--plans", help="compare memory plans: 'all' or a comma list, e.g. bf16,int8,offload")
    b.add_argument("--consecutive", type=int, default=0,
                   help="with --plans or a plan bench (CUDA): N more short generations, device memory read after each")
    b.add_argument("--eager", action="store_true", help="no CUDA graphs")
    b.add_argument("--compile", action="store_true",
                   help="torch.compile the models' repeated blocks (slower start); with serve: the server's")
    b.add_argument("--fidelity", action="store_true", help="also measure reduced precision against fp32")
    b.add_argument("--voices", action="store_true", help="measure voice storage, residency, switching, preparation")
    b.add_argument("--prepare-device", default="auto", help="with --voices: auto (lent on demand), cuda or cpu")
    b.add_argument("--voice-cache-mb", type=int, default=256, help="with --voices: device voice cache bound")
    b.add_argument("--concurrency", help="batched engine under N simultaneous requests, e.g. 1,4,16,32,64")
    b.add_argument("--plot", help="with --concurrency: write the throughput curve as an SVG here; with plot: the "
                                  "chart's SVG file")
    b.add_argument("--stream", action="store_true", help="streaming TTFA/underruns (1 and 16 streams) and "
                                                         "10,000-word long-text throughput")
    b.add_argument("--words", type=int, default=10000, help="with --stream: words of long text")
    b.add_argument("--speeds", help="measure `speed`: its pitch keeping and S3Gen cost at these rates, e.g. "
                                    "0.5,0.75,1.25,1.5,2")
    _add_stream_context(b, None)
    b.add_argument("--json", dest="out_json", default="bench.json", help="JSON output path")
    b.add_argument("--md", dest="out_md", default="bench.md", help="Markdown table output path")
    vo = sub.add_parser("voices", help="manage the voice library")
    lib_help = "voice library directory (default: $CADENCE_VOICES or the user data dir)"
    vo.add_argument("--library", help=lib_help)
    # --library also after the action (`voices list --library X`), as `say --library X` takes it
    lib = argparse.ArgumentParser(add_help=False)
    lib.add_argument("--library", default=argparse.SUPPRESS, help=lib_help)
    vs = vo.add_subparsers(dest="action", required=True)
    verb = lambda name, helptext: vs.add_parser(name, help=helptext, parents=[lib])  # noqa: E731
    add = verb("add", "prepare a recording and store it under NAME")
    add.add_argument("name", help="the voice's name (not 'default': the checkpoint's own voice)")
    add.add_argument("audio", help="a reference recording (wav, flac, mp3, ogg, m4a, ...; at most its first 30 s kept)")
    add.add_argument("--exaggeration", type=float, default=0.5, help="its default emotion intensity, 0-2")
    add.add_argument("--model", default=DEFAULT_MODEL, help="the checkpoint that prepares it")
    add.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (CUDA if present)")
    add.add_argument("--overwrite", action="store_true", help="replace a voice of that name")
    add.add_argument("--language", default=None,
                     help="the language it speaks (the multilingual model's requests that name none use it)")
    verb("list", "a table of stored voices")
    verb("show", "one voice's details").add_argument("name", help="a stored voice")
    verb("rm", "delete a voice").add_argument("name", help="a stored voice")
    ren = verb("rename", "rename a voice")
    ren.add_argument("old", help="a stored voice")
    ren.add_argument("new", help="its new name")
    exp = verb("export", "write a voice to one portable file")
    exp.add_argument("name", help="a stored voice")
    exp.add_argument("file", help="the file to write (a directory: NAME.voice in it)")
    imp = verb("import", "add a voice from an exported file or a reference conds.pt")
    imp.add_argument("file", help="a .voice file or a conds.pt")
    imp.add_argument("--name", help="its name in the library (a conds.pt needs one)")
    imp.add_argument("--overwrite", action="store_true", help="replace a voice of that name")
    sv = sub.add_parser("serve", help="OpenAI-compatible speech server (FastAPI + uvicorn)",
                        epilog="Every setting also reads CADENCE_<NAME> (e.g. CADENCE_MAX_BATCH=16); a flag wins.")
    sv.add_argument("--model", default=None, help="checkpoint directory or hub repo id (env CADENCE_MODEL)")
    sv.add_argument("--family", choices=sorted(FAMILIES), default=None,
                    help="which model of a hub repo that holds several (ResembleAI/chatterbox: english, multilingual)")
    sv.add_argument("--host", default=None, help="interface (default 127.0.0.1; env CADENCE_HOST)")
    sv.add_argument("--port", type=int, default=None, help="port (default 8000; env CADENCE_PORT)")
    sv.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto (CUDA if present; env "
                                                    "CADENCE_DEVICE)")
    sv.add_argument("--memory-plan", default=None, help="auto, fp32, bf16, bf16-lowmem, int8, offload (CUDA), cpu-int8, cpu-bf16 (CPU)")
    sv.add_argument("--vram-budget", default=None, help="with --memory-plan auto: e.g. 1.5GB, or auto (90%% of free)")
    sv.add_argument("--dtype", default=None, help="T3 and flow weights: auto, bfloat16, float32, float16")
    sv.add_argument("--max-batch", type=int, default=None, help="KV slots decoded together (default: sized to VRAM)")
    sv.add_argument("--kv-slot-len", type=int, default=None, help="KV positions per slot (default 1536)")
    sv.add_argument("--vocoder-dtype", default=None, help="HiFT weights: auto, float32 or bfloat16")
    sv.add_argument("--prepare-device", default=None, help="where uploaded voices are prepared: auto, cuda or cpu")
    sv.add_argument("--voice-cache-mb", type=int, default=None, help="device memory for resident voices (256)")
    sv.add_argument("--cpu-threads", type=int, default=None,
                    help="threads of the CPU math (default: one per core; env CADENCE_CPU_THREADS)")
    sv.add_argument("--eager", dest="enforce_eager", action="store_const", const=True, default=None,
                    help="no CUDA graphs (debugging)")
    sv.add_argument("--library", default=None, help="voice library directory")
    sv.add_argument("--api-key", default=None, help="require this bearer token on /v1/* (env CADENCE_API_KEY)")
    sv.add_argument("--cors-origins", default=None, help="comma list of allowed CORS origins")
    sv.add_argument("--max-queue", type=int, default=None, help="waiting requests before 429 (default 256)")
    sv.add_argument("--request-timeout-s", type=float, default=None, help="cancel requests after this (default 300)")
    sv.add_argument("--max-input-chars", type=int, default=None, help="longest input text (default 4096)")
    sv.add_argument("--max-body-mb", type=float, default=None, help="largest request body, uploads too (default 25)")
    sv.add_argument("--encode-workers", type=int, default=None, help="threads encoding audio (default: CPU cores)")
    sv.add_argument("--no-warmup", dest="warmup", action="store_const", const=False, default=None,
                    help="do not capture the engine's graphs before answering ready")
    sv.add_argument("--no-watermark", dest="watermark", action="store_const", const=False, default=None,
                    help="serve without the Perth watermark")
    sv.add_argument("--watermark-device", default=None,
                    help="where the watermark runs: cpu (a thread pool sized to the machine; default), auto or cuda")
    sv.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the models' repeated blocks at start: faster decoding and flow batches, "
                         "about a minute longer start on a cold cache (env CADENCE_COMPILE; default off)")
    _add_stream_context(sv, None)
    ray = sv.add_argument_group("Ray Serve (several engines: replicas per GPU, across machines; extra cadence-tts[ray])")
    ray.add_argument("--ray", action="store_true", help="serve through Ray Serve instead of one process")
    ray.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: start a local one)")
    ray.add_argument("--replicas", default="auto", help="engines to run: a count, or auto (one per GPU, at least 1)")
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscale from this many (with --max-replicas)")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many")
    ray.add_argument("--target-queue", type=int, default=64,
                     help="ongoing requests per replica the autoscaler aims at (default 64)")
    ray.add_argument("--ray-proxy", choices=("serve", "haproxy"), default="serve",
                     help="HTTP in front of the replicas: serve (Serve's proxy actor, default) or haproxy (Serve's "
                          "HAProxy mode: replicas serve HTTP themselves behind HAProxy)")
    ray.add_argument("--cpus-per-replica", type=float, default=None,
                     help="CPU cores (and torch threads) per replica (default: the cluster's cores per GPU, or per "
                          "replica on CPUs)")
    doc = sub.add_parser("doctor", help="device, free VRAM and the memory plan auto would choose")
    doc.add_argument("--vram-budget", help="a budget such as 1.5GB, or auto for 90%% of free VRAM")
    doc.add_argument("--measure", action="store_true",
                     help="also time a short generation with the plan auto picks (a tiny model's per-layer costs "
                          "scaled to full size) and print the real-time factor to expect")
    doc.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (CUDA if present); with --measure")
    doc.add_argument("--cpu-threads", type=int, default=None, help="with --measure: threads of the CPU math")
    doc.add_argument("--family", default="english", choices=sorted(FAMILIES),
                     help="with --measure: the model whose networks the self-test times (default english)")
    ck = sub.add_parser("checkpoint", help="checkpoint utilities")
    cks = ck.add_subparsers(dest="action", required=True)
    rnd = cks.add_parser("random", help="write a random-weight checkpoint in the official layout")
    rnd.add_argument("dir", help="output directory")
    rnd.add_argument("--tiny", action="store_true", help="a tiny configuration of the same architecture")
    rnd.add_argument("--family", default="english", choices=sorted(FAMILIES),
                     help="which model's layout: english (ResembleAI/chatterbox) or turbo (ResembleAI/chatterbox-turbo)")
    rnd.add_argument("--seed", type=int, default=0)
    qz = cks.add_parser("quantize", help="save the int8 T3 next to the checkpoint for faster int8 loads (CUDA), or "
                                         "fill the CPU plan's int8 cache (--device cpu)")
    qz.add_argument("dir", help="checkpoint directory")
    qz.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (CUDA if present)")
    return ap
