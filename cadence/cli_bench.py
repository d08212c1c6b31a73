"""`cadence bench ...`: the command line's benchmarks, each a function of `cadence.bench` given the parsed options."""

from __future__ import annotations

import json
import os

from .cli_parser import DEFAULT_MODEL, CliError


def _levels(text: str) -> list[int]:
    try:
        levels = [int(n) for n in text.split(",")]
    except ValueError:
        raise CliError(f"--concurrency takes a comma list of integers, got {text!r}") from None
    if not levels or min(levels) < 1 or max(levels) > 1024:
        raise CliError("--concurrency levels must be between 1 and 1024")
    return levels


def _slots(args) -> dict:
    """The batched engine's slot options given on the command line (unset ones left to EngineConfig)."""
    return {k: getattr(args, k) for k in ("max_batch", "kv_slot_len") if getattr(args, k) is not None}


def _check_bench_counts(args) -> None:
    """The offline bench's counts (plain or per plan): each run needs at least one repeat and one token."""
    if args.repeats < 1 or args.short_tokens < 1 or args.long_tokens < 1 or args.consecutive < 0:
        raise CliError("--repeats, --short-tokens and --long-tokens must be positive, --consecutive 0 or more")


def _check_bench_family(args) -> None:
    """--family picks the family's hub repo when no --model is given, and must match the one that is."""
    from .checkpoint import CheckpointError, resolve
    from .family import detect_family, family_named
    if args.family is None:
        return
    family = family_named(args.family)
    if args.model == DEFAULT_MODEL:
        args.model = family.hub_repo
    try:
        found = detect_family(resolve(args.model))
    except (CheckpointError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if found is not family:
        raise CliError(f"--family {family.name}, but {args.model} is a Chatterbox {found.name} checkpoint")


def need_ray() -> None:
    """--ray on serve or bench serve: Ray Serve must be installed (one line, exit 2, before anything starts)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CliError("--ray needs Ray Serve: pip install 'cadence-tts[ray]'") from None


def run_bench_command(args) -> None:
    """The bench the options name (--voices, --speeds, --stream, plot, soak, serve, --concurrency, --plans, or the
    offline bench); bad options raise `CliError`."""
    if args.voices:
        from .bench.offline import write_report
        from .bench.voices import bench_voices, markdown
        res = bench_voices(args.model, args.device, prepare_device=args.prepare_device,
                           voice_cache_mb=args.voice_cache_mb)
        write_report(res, markdown(res), args.out_json, args.out_md)
    elif args.speeds:
        from .bench.offline import write_report
        from .bench.speed import markdown as speed_md
        from .bench.speed import run_speed_bench
        try:
            speeds = [float(x) for x in args.speeds.split(",") if x.strip()]
        except ValueError:
            raise CliError(f"--speeds must be a comma list of rates in [0.25, 4], got {args.speeds!r}") from None
        _check_bench_counts(args)
        res = run_speed_bench(args.model, args.device, speeds, repeats=args.repeats, tokens=args.short_tokens)
        write_report(res, speed_md(res), args.out_json, args.out_md)
    elif args.stream:
        from .bench.stream import run_stream_bench
        if args.words < 1:
            raise CliError("--words must be positive")
        from .config import stream_seconds
        given = {"stream_prompt_s": args.stream_prompt_s, "stream_history_s": args.stream_history_s}
        context = {k: stream_seconds(v, k) for k, v in given.items() if v is not None}
        if args.stream_windows is not None:
            context["stream_windows"] = args.stream_windows
        for name in ("first_audio_priority", "overlap_audio"):
            if getattr(args, name) is not None:
                context[name] = getattr(args, name)
        if args.compile:
            context["compile"] = True
        context.update(_slots(args))
        run_stream_bench(args.model, args.device, _levels(args.concurrency or "1,16"), words=args.words,
                         out_json=args.out_json, out_md=args.out_md, **context)
    elif args.target == "plot":
        from .bench.plot import write_plot
        if not args.results or not args.plot:
            raise CliError("bench plot needs --results FILE.json [...] and --plot OUT.svg")
        missing = [r for r in args.results if not os.path.isfile(r)]
        if missing:
            raise CliError(f"--results: no such file: {missing[0]}")
        try:
            print(f"wrote {write_plot(args.results, args.plot)}")
        except (ValueError, KeyError) as exc:
            raise CliError(f"--results: {exc}") from None
    elif args.target == "soak":
        from .bench.soak import run_soak
        if args.seconds <= 0 or args.clients < 1:
            raise CliError("--seconds and --clients must be positive")
        run_soak(args.model, args.device, clients=args.clients, seconds=args.seconds, out_json=args.out_json)
    elif args.target == "serve":
        from .bench.serve import run_serve_bench
        levels = _levels(args.concurrency or "1,8,32")
        if args.requests_per_client < 1:
            raise CliError("--requests-per-client must be positive")
        if args.request_tokens is not None and args.request_tokens < 1:
            raise CliError("--request-tokens must be positive")
        if args.cold_probe < 0:
            raise CliError("--cold-probe must be 0 (skip) or a number of clients")
        if args.ray:
            need_ray()
            if args.ray_rounds < 1:
                raise CliError("--ray-rounds must be at least 1")
        run_serve_bench(args.model, args.device, levels, requests_per_client=args.requests_per_client,
                        max_tokens=args.long_tokens, out_json=args.out_json, out_md=args.out_md,
                        level_timeout_s=args.level_timeout_s, server_log=args.server_log,
                        compile=args.compile or None, fmt=args.format, watermark=args.watermark,
                        watermark_device=args.watermark_device, client=args.client,
                        request_tokens=args.request_tokens, cold_probe=args.cold_probe, server_options={
                            **_slots(args), "memory_plan": args.memory_plan, "vram_budget": args.vram_budget,
                            "encode_workers": args.encode_workers}, engine_only=args.engine_only, ray=args.ray,
                        ray_rounds=args.ray_rounds, ray_proxy=args.ray_proxy,
                        modes={"both": (True, False), "streamed": (True,), "one-piece": (False,)}[args.modes])
    elif args.concurrency:
        from .bench.concurrency import run_concurrency
        levels = _levels(args.concurrency)
        run_concurrency(args.model, args.device, levels, seed=1, memory_plan=args.memory_plan,
                        out_json=args.out_json, out_md=args.out_md, plot=args.plot,
                        vram_budget=args.vram_budget, **_slots(args))
    elif args.plans:
        from .bench.offline import BenchOptions
        from .bench.plans import run_plans
        from .memory.plan import ALL_PLANS, CPU_PLANS, PLANS
        on_cpu = args.device.startswith("cpu")
        names = list(CPU_PLANS if on_cpu else PLANS) if args.plans == "all" else [
            p.strip() for p in args.plans.split(",")]
        unknown = [n for n in names if n not in ALL_PLANS]
        if unknown:
            raise CliError(f"unknown memory plan(s): {', '.join(unknown)}; choose from {', '.join(ALL_PLANS)}")
        _check_bench_counts(args)
        opt = BenchOptions(model=args.model, device=args.device, reference=args.reference, repeats=args.repeats,
                           short_tokens=args.short_tokens, long_tokens=args.long_tokens,
                           consecutive=args.consecutive, cpu_threads=args.cpu_threads)
        run_plans(opt, names, args.out_json, args.out_md)
    else:
        from .bench.offline import BenchOptions, run_bench
        _check_bench_counts(args)
        _check_bench_family(args)
        opt = BenchOptions(model=args.model, device=args.device, voice_audio=args.voice_audio,
                           reference=args.reference, repeats=args.repeats, short_tokens=args.short_tokens,
                           long_tokens=args.long_tokens, dtype=args.dtype, enforce_eager=args.eager,
                           compile=args.compile or None, vocoder_dtype=args.vocoder_dtype,
                           memory_plan=args.memory_plan, consecutive=args.consecutive, watermark=args.watermark,
                           watermark_device=args.watermark_device or "cpu", vram_budget=args.vram_budget,
                           cpu_threads=args.cpu_threads)
        result = run_bench(opt, args.out_json, args.out_md)
        if args.fidelity:
            from .bench.fidelity import fidelity
            result["fidelity"] = fidelity(args.model, args.device, "bfloat16" if args.dtype == "auto" else args.dtype,
                                          "float32" if args.vocoder_dtype == "auto" else args.vocoder_dtype)
            print(json.dumps(result["fidelity"], indent=1))
            with open(args.out_json, "w") as f:
                json.dump(result, f, indent=1)
