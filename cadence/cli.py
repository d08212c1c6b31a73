"""`cadence` command line: say, serve, voices, doctor, checkpoint; the benches in `cli_bench`."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from .cli_bench import need_ray, run_bench_command
from .cli_parser import CliError, build_parser
from .sampling_params import SamplingParams

def _status(message: str) -> None:
    print(f"cadence: {message}", file=sys.stderr, flush=True)


def _say(args) -> None:
    from .longform import EXTENSIONS, render_file
    from .tts import TTS
    to_stdout = args.output == "-"
    if to_stdout:  # the audio to standard output, in --format (default wav); messages to stderr
        import tempfile
        fmt = args.format or "wav"
        out = Path(tempfile.mkdtemp(prefix="cadence-")) / f"out.{fmt}"
    else:
        out = Path(args.output)
        fmt = args.format or EXTENSIONS.get(out.suffix.lower())
    if fmt is None:
        raise CliError(f"output extension must be one of {' '.join(EXTENSIONS)}, got {out.name}")
    if not out.parent.exists():
        raise CliError(f"output directory does not exist: {out.parent}")
    if out.is_dir():
        raise CliError(f"output {out} is a directory; name a file")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CliError(f"cannot write {out}: permission denied")  # found before loading, not after synthesising
    if (args.text is None) == (args.file is None):
        raise CliError("give the text or --file, one of them")
    text = args.text
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}") from None
    if not text.strip():
        raise CliError("text is empty")
    knobs = dict(exaggeration=args.exaggeration, cfg_weight=args.cfg_weight, temperature=args.temperature,
                 repetition_penalty=args.repetition_penalty, min_p=args.min_p, top_p=args.top_p, top_k=args.top_k,
                 max_new_tokens=args.max_new_tokens, language=args.language, alignment_stop=args.alignment_stop)
    knobs = {k: v for k, v in knobs.items() if v is not None}  # unset: the loaded family's default
    SamplingParams(**knobs, seed=args.seed)  # ranges checked before the model loads
    from .audio.speed import check_speed
    check_speed(args.speed)
    if args.voice and args.voice_audio:
        raise CliError("give either --voice or --voice-audio, not both")
    status = _status if sys.stderr.isatty() else (lambda _: None)  # at a terminal: what it is doing meanwhile
    status(f"loading {args.model} ...")
    engine = {k: getattr(args, k) for k in ("dtype", "vocoder_dtype", "prepare_device", "enforce_eager", "compile",
                                            "watermark_device", "max_batch", "kv_slot_len", "voice_cache_mb",
                                            "cpu_threads")
              if getattr(args, k) is not None}  # unset: EngineConfig's defaults
    tts = TTS.from_dir(args.model, device=args.device, watermark=args.watermark, memory_plan=args.memory_plan,
                       vram_budget=args.vram_budget, family=args.family, **engine)
    status(f"{tts.family.name} model on {tts.device} ({tts.plan.name}); speaking ...")
    if args.voice_audio:
        voice = tts.prepare_voice(args.voice_audio)
    elif args.voice:
        voice = tts.voice(args.voice, tts.library(args.library) if args.library else None)
    else:
        voice = None
    if args.file:
        info = render_file(tts, text, out, voice=voice, seed=args.seed, speed=args.speed, **knobs)
        tts.close()
        _deliver(out, to_stdout, f"({info['seconds']:.2f} s from {info['chunks']} chunks, {info['resumed']} resumed, "
                                 f"{info['wall_s']:.1f} s, seed {info['seed']})")
        return
    from .audio.encode import encode_all
    audio = tts.generate(text, voice=voice, params=tts.params(**knobs, seed=args.seed), speed=args.speed)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(encode_all(audio.samples, fmt, audio.sample_rate))
    os.replace(tmp, out)
    t = audio.timings
    _deliver(out, to_stdout, f"({audio.duration:.2f} s, {len(audio.tokens)} tokens, {t['total']:.2f} s, "
                             f"RTF {audio.rtf:.3f}{', watermarked' if audio.watermarked else ''})")


def _deliver(out: Path, to_stdout: bool, summary: str) -> None:
    """The finished file: reported, or (with `-o -`) copied to standard output and removed."""
    if not to_stdout:
        print(f"wrote {out} {summary}")
        return
    sys.stdout.buffer.write(out.read_bytes())
    sys.stdout.buffer.flush()
    out.unlink()
    out.parent.rmdir()
    print(f"cadence: wrote stdout {summary}", file=sys.stderr)


def _positive_int(text: str, flag: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise CliError(f"{flag} must be a positive integer or auto, got {text!r}")
    return int(text)


def _voices(args) -> None:
    from .voices.library import VoiceLibrary
    if args.action == "add":
        from .tts import TTS
        tts = TTS.from_dir(args.model, device=args.device, watermark=False)
        lib = tts.library(args.library) if args.library else tts.library()
        v = lib.add(args.name, args.audio, exaggeration=args.exaggeration, overwrite=args.overwrite,
                    language=args.language)
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


def _innermost(parser, args):
    """The (sub)parser of the command line's deepest command: `cadence voices add` -> the `add` parser."""
    import argparse
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None:
            return parser
        parser = subs[0].choices[chosen]


def main(argv: list[str] | None = None) -> int:
    from .cache_dir import keep_compiled_kernels
    from .early_start import start
    keep_compiled_kernels()  # before torch and Triton are imported, here and in the helpers started next
    start(sys.argv[1:] if argv is None else list(argv))  # `serve`'s helper processes, before torch is imported
    logging.basicConfig(level=logging.WARNING, format="cadence: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command it was given to, with that command's usage (not the top-level one)
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    import threading
    if args.command == "bench" and threading.current_thread() is threading.main_thread():
        import signal  # a bench stopped by SIGTERM (`timeout`) still stops the server it started
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "bench" and str(args.device).startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise CliError(f"--device {args.device}, but this machine has no CUDA device; use --device cpu")
        if args.command == "bench" and args.device == "auto":  # the benches take a concrete device
            from .tts import pick_device
            args.device = str(pick_device("auto"))
        if args.command == "say":
            _say(args)
        elif args.command == "doctor":
            from .doctor import report
            if args.vram_budget not in (None, "auto"):
                from .memory.plan import parse_size_mb
                parse_size_mb(args.vram_budget)
            print("\n".join(report(args.vram_budget, measure=args.measure, device=args.device,
                                    cpu_threads=args.cpu_threads, family=args.family)))
        elif args.command == "serve":
            from .server import ServerSettings, create_app
            cors = [o.strip() for o in args.cors_origins.split(",")] if args.cors_origins else None
            settings = ServerSettings.from_env(model=args.model, family=args.family, host=args.host, port=args.port,
                                               device=args.device,
                                               memory_plan=args.memory_plan, vram_budget=args.vram_budget,
                                               dtype=args.dtype, max_batch=args.max_batch, library=args.library,
                                               max_input_chars=args.max_input_chars, max_body_mb=args.max_body_mb,
                                               encode_workers=args.encode_workers, warmup=args.warmup,
                                               kv_slot_len=args.kv_slot_len, vocoder_dtype=args.vocoder_dtype,
                                               prepare_device=args.prepare_device,
                                               voice_cache_mb=args.voice_cache_mb, enforce_eager=args.enforce_eager,
                                               api_key=args.api_key, cors_origins=cors, max_queue=args.max_queue,
                                               request_timeout_s=args.request_timeout_s, watermark=args.watermark,
                                               watermark_device=args.watermark_device,
                                               stream_prompt_s=args.stream_prompt_s,
                                               stream_history_s=args.stream_history_s,
                                               stream_windows=args.stream_windows,
                                               first_audio_priority=args.first_audio_priority,
                                               overlap_audio=args.overlap_audio, compile=args.compile,
                                               cpu_threads=args.cpu_threads)
            if args.ray:
                from .ray import RayOptions, run
                replicas = args.replicas if args.replicas == "auto" else _positive_int(args.replicas, "--replicas")
                options = RayOptions(replicas=replicas, min_replicas=args.min_replicas,
                                     max_replicas=args.max_replicas, target_queue=args.target_queue,
                                     cpus_per_replica=args.cpus_per_replica, proxy=args.ray_proxy)
                need_ray()
                run(settings, options, address=args.ray_address)
                return
            import faulthandler
            import signal
            import uvicorn
            if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: every thread's stack to stderr, the server goes on
                faulthandler.register(signal.SIGUSR1, all_threads=True)
            from .audio.encode import format_unavailable
            reason = format_unavailable("mp3")
            if reason:  # a broken install: say so at start, not at the first mp3 request
                print(f"cadence serve: warning: {reason}", file=sys.stderr)
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
        elif args.command == "voices":
            _voices(args)
        elif args.command == "bench":
            run_bench_command(args)
        elif args.command == "checkpoint" and args.action == "quantize":
            from .tts import TTS, pick_device
            if pick_device(args.device).type == "cpu":  # the CPU plan writes its int8 cache as it loads
                from .memory.cpu_int8_cache import cache_path
                tts = TTS.from_dir(args.dir, device="cpu", watermark=False)
                if not tts.plan.cpu_int8:
                    raise CliError(f"the CPU plan here is {tts.plan.name} (no FBGEMM int8 kernels): nothing to quantise")
                print(f"int8 cache for the CPU ready: {cache_path(tts.fingerprint)}")
            else:
                tts = TTS.from_dir(args.dir, device=args.device, watermark=False, memory_plan="int8", dtype="bfloat16")
                print(f"wrote {tts.save_quantized()}")
        elif args.command == "checkpoint" and args.action == "random":
            from .random_checkpoint import (make_random_checkpoint, make_random_multilingual_checkpoint,
                                            make_random_turbo_checkpoint)
            make = {"turbo": make_random_turbo_checkpoint, "multilingual": make_random_multilingual_checkpoint}.get(
                args.family, make_random_checkpoint)
            if Path(args.dir).exists() and not Path(args.dir).is_dir():
                raise CliError(f"{args.dir} is a file; name a directory for the checkpoint")
            path = make(args.dir, seed=args.seed, tiny=args.tiny)
            print(f"wrote random {'tiny' if args.tiny else 'full-size'} {args.family} checkpoint to {path}")
    except (CliError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cadence: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line, and out at once: the engine's threads are not joined on the way
        print("cadence: interrupted (a `say --file` resumes from its finished chunks)", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
