"""`cadence` command line: say, checkpoint random."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .sampling_params import SamplingParams

DEFAULT_MODEL = os.environ.get("CADENCE_MODEL", "ResembleAI/chatterbox")


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _add_knobs(p: argparse.ArgumentParser) -> None:
    d = SamplingParams()
    p.add_argument("--exaggeration", type=float, default=None, help="emotion intensity 0..2 (default: the voice's)")
    p.add_argument("--cfg-weight", type=float, default=d.cfg_weight, help="classifier-free guidance weight")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help="repetition penalty >= 1")
    p.add_argument("--min-p", type=float, default=d.min_p, help="min-p filter (0 disables)")
    p.add_argument("--top-p", type=float, default=d.top_p, help="nucleus filter (1 disables)")
    p.add_argument("--top-k", type=int, default=d.top_k, help="top-k filter (0 disables)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="speech-token limit (25 = 1 s)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a reproducible result")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cadence", description="Fast Chatterbox text-to-speech.")
    sub = ap.add_subparsers(dest="command", required=True)
    say = sub.add_parser("say", help="synthesize text to a WAV file")
    say.add_argument("text", nargs="?", help="the text to speak (or --file)")
    say.add_argument("--file", help="a text file of any length: split into chunks, rendered together, resumable")
    say.add_argument("-o", "--output", required=True, help="output path; format from the extension "
                                                            "(.wav .flac .mp3 .opus .ogg .aac .pcm)")
    say.add_argument("--voice-audio", help="reference recording to clone (wav/flac/mp3/ogg, any rate)")
    say.add_argument("--voice", help="a library voice by name ('default': the checkpoint's built-in voice)")
    say.add_argument("--library", help="voice library directory (default: $CADENCE_VOICES or the user data dir)")
    say.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub repo id")
    say.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    say.add_argument("--no-watermark", dest="watermark", action="store_false", help="skip the Perth watermark")
    say.add_argument("--memory-plan", default="auto", help="fp32, bf16, bf16-lowmem, int8, offload or auto")
    say.add_argument("--vram-budget", help="with --memory-plan auto: e.g. 1.5GB, or auto (90%% of free VRAM)")
    _add_knobs(say)
    b = sub.add_parser("bench", help="measure load, voice preparation, T3, S3Gen, RTF and VRAM")
    b.add_argument("target", nargs="?", choices=["serve", "soak"],
                   help="'serve': HTTP load on a cadence serve process; 'soak': a bounded soak + cancellation storm")
    b.add_argument("--seconds", type=float, default=600, help="with soak: how long the clients run")
    b.add_argument("--clients", type=int, default=16, help="with soak: concurrent clients")
    b.add_argument("--requests-per-client", type=int, default=2, help="with serve: requests each client sends")
    b.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint directory or hub repo id")
    b.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    b.add_argument("--voice-audio", help="reference recording (default: a built-in synthetic 10 s clip)")
    b.add_argument("--reference", action="store_true", help="also run chatterbox-tts side by side")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--short-tokens", type=int, default=75, help="short clip: T3 tokens (75 = 3 s)")
    b.add_argument("--long-tokens", type=int, default=750, help="long clip: T3 tokens (750 = 30 s)")
    b.add_argument("--dtype", default="auto", help="T3 and flow weights: auto, bfloat16, float32, float16")
    b.add_argument("--vocoder-dtype", default="auto", help="HiFT weights: auto (the plan's), float32 or bfloat16")
    b.add_argument("--memory-plan", default="auto", help="fp32, bf16, bf16-lowmem, int8, offload or auto")
    b.add_argument("--plans", help="compare memory plans: 'all' or a comma list, e.g. bf16,int8,offload")
    b.add_argument("--eager", action="store_true", help="no CUDA graphs")
    b.add_argument("--compile", action="store_true", help="torch.compile the T3 layers (slower start)")
    b.add_argument("--fidelity", action="store_true", help="also measure reduced precision against fp32")
    b.add_argument("--voices", action="store_true", help="measure voice storage, residency, switching, preparation")
    b.add_argument("--prepare-device", default="auto", help="with --voices: auto (lent on demand), cuda or cpu")
    b.add_argument("--voice-cache-mb", type=int, default=256, help="with --voices: device voice cache bound")
    b.add_argument("--concurrency", help="batched engine under N simultaneous requests, e.g. 1,4,16,32,64")
    b.add_argument("--plot", help="with --concurrency: write the throughput curve as an SVG here")
    b.add_argument("--stream", action="store_true", help="streaming TTFA/underruns (1 and 16 streams) and "
                                                         "10,000-word long-text throughput")
    b.add_argument("--words", type=int, default=10000, help="with --stream: words of long text")
    b.add_argument("--json", dest="out_json", default="bench.json", help="JSON output path")
    b.add_argument("--md", dest="out_md", default="bench.md", help="Markdown table output path")
    vo = sub.add_parser("voices", help="manage the voice library")
    vo.add_argument("--library", help="voice library directory (default: $CADENCE_VOICES or the user data dir)")
    vs = vo.add_subparsers(dest="action", required=True)
    add = vs.add_parser("add", help="prepare a recording and store it under NAME")
    add.add_argument("name")
    add.add_argument("audio")
    add.add_argument("--exaggeration", type=float, default=0.5)
    add.add_argument("--model", default=DEFAULT_MODEL)
    add.add_argument("--device", default="auto")
    add.add_argument("--overwrite", action="store_true")
    vs.add_parser("list", help="a table of stored voices")
    for verb, helptext in (("show", "one voice's details"), ("rm", "delete a voice")):
        vs.add_parser(verb, help=helptext).add_argument("name")
    ren = vs.add_parser("rename", help="rename a voice")
    ren.add_argument("old")
    ren.add_argument("new")
    exp = vs.add_parser("export", help="write a voice to one portable file")
    exp.add_argument("name")
    exp.add_argument("file")
    imp = vs.add_parser("import", help="add a voice from an exported file or a reference conds.pt")
    imp.add_argument("file")
    imp.add_argument("--name")
    imp.add_argument("--overwrite", action="store_true")
    sv = sub.add_parser("serve", help="OpenAI-compatible speech server (FastAPI + uvicorn)")
    sv.add_argument("--model", default=None, help="checkpoint directory or hub repo id (env CADENCE_MODEL)")
    sv.add_argument("--host", default=None, help="interface (default 127.0.0.1; env CADENCE_HOST)")
    sv.add_argument("--port", type=int, default=None, help="port (default 8000; env CADENCE_PORT)")
    sv.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    sv.add_argument("--memory-plan", default=None, help="fp32, bf16, bf16-lowmem, int8, offload or auto")
    sv.add_argument("--library", default=None, help="voice library directory")
    sv.add_argument("--api-key", default=None, help="require this bearer token on /v1/* (env CADENCE_API_KEY)")
    sv.add_argument("--cors-origins", default=None, help="comma list of allowed CORS origins")
    sv.add_argument("--max-queue", type=int, default=None, help="waiting requests before 429 (default 256)")
    sv.add_argument("--request-timeout-s", type=float, default=None, help="cancel requests after this (default 300)")
    sv.add_argument("--no-watermark", dest="watermark", action="store_const", const=False, default=None)
    doc = sub.add_parser("doctor", help="device, free VRAM and the memory plan auto would choose")
    doc.add_argument("--vram-budget", help="a budget such as 1.5GB, or auto for 90%% of free VRAM")
    ck = sub.add_parser("checkpoint", help="checkpoint utilities")
    cks = ck.add_subparsers(dest="action", required=True)
    rnd = cks.add_parser("random", help="write a random-weight checkpoint in the official layout")
    rnd.add_argument("dir", help="output directory")
    rnd.add_argument("--tiny", action="store_true", help="a tiny configuration of the same architecture")
    rnd.add_argument("--seed", type=int, default=0)
    qz = cks.add_parser("quantize", help="save the int8 T3 next to the checkpoint for faster int8 loads")
    qz.add_argument("dir", help="checkpoint directory")
    qz.add_argument("--device", default="auto")
    return ap


def _say(args) -> None:
    from .longform import EXTENSIONS, render_file
    from .tts import TTS
    out = Path(args.output)
    fmt = EXTENSIONS.get(out.suffix.lower())
    if fmt is None:
        raise CliError(f"output extension must be one of {' '.join(EXTENSIONS)}, got {out.name}")
    if not out.parent.exists():
        raise CliError(f"output directory does not exist: {out.parent}")
    if (args.text is None) == (args.file is None):
        raise CliError("give the text or --file, one of them")
    text = args.text
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
    if not text.strip():
        raise CliError("text is empty")
    knobs = dict(exaggeration=args.exaggeration, cfg_weight=args.cfg_weight, temperature=args.temperature,
                 repetition_penalty=args.repetition_penalty, min_p=args.min_p, top_p=args.top_p, top_k=args.top_k,
                 max_new_tokens=args.max_new_tokens)
    params = SamplingParams(**knobs, seed=args.seed)
    if args.voice and args.voice_audio:
        raise CliError("give either --voice or --voice-audio, not both")
    tts = TTS.from_dir(args.model, device=args.device, watermark=args.watermark, memory_plan=args.memory_plan,
                       vram_budget=args.vram_budget)
    if args.voice_audio:
        voice = tts.prepare_voice(args.voice_audio)
    elif args.voice:
        voice = tts.voice(args.voice, tts.library(args.library) if args.library else None)
    else:
        voice = None
    if args.file:
        info = render_file(tts, text, out, voice=voice, seed=args.seed, **knobs)
        tts.close()
        print(f"wrote {out} ({info['seconds']:.2f} s from {info['chunks']} chunks, {info['resumed']} resumed, "
              f"{info['wall_s']:.1f} s, seed {info['seed']})")
        return
    from .audio.encode import encode_all
    audio = tts.generate(text, voice=voice, params=params)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(encode_all(audio.samples, fmt, audio.sample_rate))
    os.replace(tmp, out)
    t = audio.timings
    print(f"wrote {out} ({audio.duration:.2f} s, {len(audio.tokens)} tokens, {t['total']:.2f} s, "
          f"RTF {audio.rtf:.3f}{', watermarked' if audio.watermarked else ''})")


def _voices(args) -> None:
    from .voices.library import VoiceLibrary
    if args.action == "add":
        from .tts import TTS
        tts = TTS.from_dir(args.model, device=args.device, watermark=False)
        lib = tts.library(args.library) if args.library else tts.library()
        v = lib.add(args.name, args.audio, exaggeration=args.exaggeration, overwrite=args.overwrite)
        print(f"added {v.meta['name']!r} ({v.meta.get('duration_s', 0):.2f} s) to {lib.root}")
        return
    lib = VoiceLibrary(args.library)
    if args.action == "list":
        infos, errors = lib.list()
        rows = [("NAME", "DURATION", "EXAGGERATION", "CREATED", "SIZE")]
        rows += [(i.name, f"{i.duration_s:.2f} s", f"{i.exaggeration:.2f}", i.created, f"{i.bytes / 1024:.0f} KB")
                 for i in infos]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        for e in errors:
            print(f"cadence: warning: {e}", file=sys.stderr)
    elif args.action == "show":
        import dataclasses
        import json
        print(json.dumps(dataclasses.asdict(lib.info(args.name)), indent=1))
    elif args.action == "rm":
        lib.remove(args.name)
        print(f"removed {args.name!r}")
    elif args.action == "rename":
        lib.rename(args.old, args.new)
        print(f"renamed {args.old!r} to {args.new!r}")
    elif args.action == "export":
        print(f"wrote {lib.export(args.name, args.file)}")
    elif args.action == "import":
        if args.file.endswith(".pt"):
            if not args.name:
                raise CliError("importing a conds.pt needs --name")
            v = lib.import_conds(args.file, args.name, overwrite=args.overwrite)
        else:
            v = lib.import_file(args.file, name=args.name, overwrite=args.overwrite)
        print(f"imported {v.meta['name']!r}")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(n) for n in text.split(",")]
    except ValueError:
        raise CliError(f"--concurrency takes a comma list of integers, got {text!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 1024:
        raise CliError("--concurrency levels must be between 1 and 1024")
    return levels


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="cadence: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "say":
            _say(args)
        elif args.command == "doctor":
            from .doctor import report
            if args.vram_budget not in (None, "auto"):
                from .memory.plan import parse_size_mb
                parse_size_mb(args.vram_budget)
            print("\n".join(report(args.vram_budget)))
        elif args.command == "serve":
            from .server import ServerSettings, create_app
            cors = [o.strip() for o in args.cors_origins.split(",")] if args.cors_origins else None
            settings = ServerSettings.from_env(model=args.model, host=args.host, port=args.port, device=args.device,
                                               memory_plan=args.memory_plan, library=args.library,
                                               api_key=args.api_key, cors_origins=cors, max_queue=args.max_queue,
                                               request_timeout_s=args.request_timeout_s, watermark=args.watermark)
            import uvicorn
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
        elif args.command == "voices":
            _voices(args)
        elif args.command == "bench" and args.voices:
            from .bench.offline import write_report
            from .bench.voices import bench_voices, markdown
            res = bench_voices(args.model, args.device, prepare_device=args.prepare_device,
                               voice_cache_mb=args.voice_cache_mb)
            write_report(res, markdown(res), args.out_json, args.out_md)
        elif args.command == "bench" and args.stream:
            from .bench.stream import run_stream_bench
            if args.words < 1:
                raise CliError("--words must be positive")
            run_stream_bench(args.model, args.device, _levels(args.concurrency or "1,16"), words=args.words,
                             out_json=args.out_json, out_md=args.out_md)
        elif args.command == "bench" and args.target == "soak":
            from .bench.soak import run_soak
            if args.seconds <= 0 or args.clients < 1:
                raise CliError("--seconds and --clients must be positive")
            run_soak(args.model, args.device, clients=args.clients, seconds=args.seconds, out_json=args.out_json)
        elif args.command == "bench" and args.target == "serve":
            from .bench.serve import run_serve_bench
            levels = _levels(args.concurrency or "1,8,32")
            if args.requests_per_client < 1:
                raise CliError("--requests-per-client must be positive")
            run_serve_bench(args.model, args.device, levels, requests_per_client=args.requests_per_client,
                            max_tokens=args.long_tokens, out_json=args.out_json, out_md=args.out_md)
        elif args.command == "bench" and args.concurrency:
            from .bench.concurrency import run_concurrency
            levels = _levels(args.concurrency)
            run_concurrency(args.model, args.device, levels, seed=1, memory_plan=args.memory_plan,
                            out_json=args.out_json, out_md=args.out_md, plot=args.plot)
        elif args.command == "bench" and args.plans:
            from .bench.offline import BenchOptions, run_plans
            from .memory.plan import PLANS
            names = list(PLANS) if args.plans == "all" else [p.strip() for p in args.plans.split(",")]
            unknown = [n for n in names if n not in PLANS]
            if unknown:
                raise CliError(f"unknown memory plan(s): {', '.join(unknown)}; choose from {', '.join(PLANS)}")
            opt = BenchOptions(model=args.model, device=args.device, reference=args.reference, repeats=args.repeats,
                               short_tokens=args.short_tokens, long_tokens=args.long_tokens)
            run_plans(opt, names, args.out_json, args.out_md)
        elif args.command == "bench":
            from .bench.offline import BenchOptions, run_bench
            if args.repeats < 1 or args.short_tokens < 1 or args.long_tokens < 1:
                raise CliError("--repeats, --short-tokens and --long-tokens must be positive")
            opt = BenchOptions(model=args.model, device=args.device, voice_audio=args.voice_audio,
                               reference=args.reference, repeats=args.repeats, short_tokens=args.short_tokens,
                               long_tokens=args.long_tokens, dtype=args.dtype, enforce_eager=args.eager,
                               compile=args.compile or None, vocoder_dtype=args.vocoder_dtype,
                               memory_plan=args.memory_plan)
            result = run_bench(opt, args.out_json, args.out_md)
            if args.fidelity:
                import json

                from .bench.fidelity import fidelity
                result["fidelity"] = fidelity(args.model, args.device, "bfloat16" if args.dtype == "auto" else args.dtype,
                                              "float32" if args.vocoder_dtype == "auto" else args.vocoder_dtype)
                print(json.dumps(result["fidelity"], indent=1))
                with open(args.out_json, "w") as f:
                    json.dump(result, f, indent=1)
        elif args.command == "checkpoint" and args.action == "quantize":
            from .tts import TTS
            tts = TTS.from_dir(args.dir, device=args.device, watermark=False, memory_plan="int8", dtype="bfloat16")
            print(f"wrote {tts.save_quantized()}")
        elif args.command == "checkpoint" and args.action == "random":
            from .random_checkpoint import make_random_checkpoint
            path = make_random_checkpoint(args.dir, seed=args.seed, tiny=args.tiny)
            print(f"wrote random {'tiny' if args.tiny else 'full-size'} checkpoint to {path}")
    except (CliError, ValueError, FileNotFoundError, PermissionError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cadence: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
