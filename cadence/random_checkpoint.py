"""Random-weight checkpoints in the exact official layout (file names, keys, shapes, dtypes), deterministic
by seed. Speed and memory do not depend on weight values, so benchmarks and parity tests use these."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .voices.store import readable_by_all

from .audio.dsp import slaney_mel_filters
from .checkpoint import ModelConfig, build, official_shapes

SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5, "[MASK]": 6, "[START]": 255}
_ACCENTED = "àâäæçéèêëîïôœùûüÿÀÂÄÇÉÈÊËÎÏÔÙÛÜñÑ"[:28]
_CHARS = [chr(c) for c in range(33, 127)] + list(_ACCENTED)
_CORPUS = """The quick brown fox jumps over the lazy dog. A speech model turns text into sound, one token at a
time, and every voice it hears becomes a new way of speaking. Hello there, this is a quick test of the
reference model. We measure what we build, we test what we claim, and we write down how long things take.
She sells sea shells by the sea shore; the shells she sells are surely seashells. How much wood would a
woodchuck chuck if a woodchuck could chuck wood? Peter Piper picked a peck of pickled peppers. When the
sunlight strikes raindrops in the air, they act as a prism and form a rainbow. The rainbow is a division of
white light into many beautiful colors. These take the shape of a long round arch, with its path high above,
and its two ends apparently beyond the horizon. There is, according to legend, a boiling pot of gold at one
end. People look, but no one ever finds it. When a man looks for something beyond his reach, his friends say
he is looking for the pot of gold at the end of the rainbow. Throughout the centuries people have explained
the rainbow in various ways. Some have accepted it as a miracle without physical explanation. Numbers like
one, two, three, four, five, six, seven, eight, nine and ten should be read aloud clearly and naturally."""


def _learn_merges(vocab_size: int) -> tuple[dict, list]:
    """A tiny deterministic BPE learner: frequency-ranked merges over the corpus's words (ties broken
    lexically) until the vocabulary is full; id 255 stays reserved for [START]."""
    vocab = dict(SPECIALS)
    next_id = 7
    for ch in _CHARS:
        vocab[ch] = next_id
        next_id += 1
    words = Counter(w for w in _CORPUS.replace("\n", " ").split(" ") if w)
    seqs = {w: list(w) for w in words}
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merged = a + b
        merges.append(f"{a} {b}")
        if next_id == 255:
            next_id += 1
        vocab[merged] = next_id
        next_id += 1
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return vocab, merges


def tokenizer_json(vocab_size: int = 704) -> dict:
    vocab, merges = _learn_merges(vocab_size)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t, i in sorted(SPECIALS.items(), key=lambda kv: kv[1])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": merges}}


def synthetic_voice(seconds: float = 10.0, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal: a gliding harmonic source through moving formants, with
    syllable-rate amplitude and short noise bursts. Used where a real recording is not available."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    src = sum(np.sin(k * phase) / k for k in range(1, 25))
    formant = 1 + 0.5 * np.sin(2 * np.pi * 2.3 * t)
    voiced = src * formant * (0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2)
    noise = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 1.3 * t) > 0.85)
    wav = 0.25 * voiced / np.abs(voiced).max() + 0.05 * noise
    return wav.astype(np.float32)


def _s3gen_state(s3gen, seed: int) -> dict:
    """S3Gen's random tensors, with the S3 tokenizer's mel filters and window as the real (fixed) values."""
    tok = s3gen.cfg.tokenizer
    real_buffers = {
        "tokenizer._mel_filters": torch.from_numpy(slaney_mel_filters(16000, tok.n_fft, tok.n_mels)),
        "tokenizer.window": torch.hann_window(tok.n_fft),
    }
    return random_state(s3gen, seed, real_buffers)


def _save_s3gen(s3gen, path: Path, seed: int, meta: dict) -> None:
    save_file(_s3gen_state(s3gen, seed), str(path), metadata=meta)
    readable_by_all(path)


@contextlib.contextmanager
def _written_whole(out: Path):
    """Yields a temporary sibling directory to write into; its files move into `out` only once all are written,
    conds.pt last. A run that fails midway leaves `out` as it was: a partial checkpoint would later load, or be
    skipped over by a script, as if it were whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "conds.pt"):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_random_checkpoint(out_dir: str | Path, seed: int = 0, tiny: bool = False, with_conds: bool = True) -> Path:
    """Write ve/t3_cfg/s3gen safetensors, tokenizer.json and (optionally) a conds.pt default voice; all of them
    or, on a failure, none."""
    with _written_whole(Path(out_dir)) as tmp:
        _write_english(tmp, seed, tiny, with_conds)
    return Path(out_dir)


def _write_english(out: Path, seed: int, tiny: bool, with_conds: bool) -> None:
    cfg = ModelConfig.tiny() if tiny else ModelConfig.english()
    meta = {"format": "pt", "cadence_config": "tiny" if tiny else "english", "cadence_seed": str(seed)}
    t3, s3gen, ve = build(cfg)
    save_file(random_state(ve, seed), str(out / "ve.safetensors"), metadata=meta)
    save_file(random_state(t3, seed + 1), str(out / "t3_cfg.safetensors"), metadata=meta)
    for name in ("ve.safetensors", "t3_cfg.safetensors"):
        readable_by_all(out / name)
    _save_s3gen(s3gen, out / "s3gen.safetensors", seed + 2, meta)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(cfg.t3.text_vocab), ensure_ascii=False))
    if with_conds:
        _write_default_voice(out)


def gpt2_tokenizer_files(out: Path) -> None:
    """A byte-level BPE in GPT-2's file layout (vocab.json, merges.txt, added_tokens.json and the two configs
    `AutoTokenizer` reads): merges learned on a small corpus, the rest of GPT-2's 50,257 ids filled with
    unreachable tokens, <|endoftext|> at 50256, and Turbo's 19 tags after it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from .family import TURBO_TAGS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=4000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    learned = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(learned["vocab"].items(), key=lambda kv: kv[1]))
    for i in range(len(vocab), 50256):
        vocab[f"<|unused{i}|>"] = i
    vocab["<|endoftext|>"] = 50256
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (out / "added_tokens.json").write_text(json.dumps({t: 50257 + i for i, t in enumerate(TURBO_TAGS)}))
    eos = "<|endoftext|>"
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": eos, "eos_token": eos, "unk_token": eos}))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 8196, "bos_token": eos, "eos_token": eos,
         "unk_token": eos, "add_prefix_space": False}))


def make_random_turbo_checkpoint(out_dir: str | Path, seed: int = 0, tiny: bool = False,
                                 with_conds: bool = True) -> Path:
    """Write Turbo's ve.safetensors, t3_turbo_v1.safetensors, s3gen_meanflow.safetensors and GPT-2 tokenizer
    files, random by seed; all of them or, on a failure, none."""
    with _written_whole(Path(out_dir)) as tmp:
        _write_turbo(tmp, seed, tiny, with_conds)
    return Path(out_dir)


def _write_turbo(out: Path, seed: int, tiny: bool, with_conds: bool) -> None:
    from .family import TURBO
    from .models.s3gen import S3Gen
    from .models.voice_encoder import VoiceEncoder
    meta = {"format": "pt", "cadence_config": "tiny" if tiny else "turbo", "cadence_seed": str(seed)}
    with torch.device("meta"):
        t3, ve, s3gen = TURBO.build_t3(tiny), VoiceEncoder(), S3Gen(TURBO.s3gen(tiny))
    save_file(random_state(ve, seed), str(out / "ve.safetensors"), metadata=meta)
    save_file(random_state(t3, seed + 1), str(out / TURBO.t3_file), metadata=meta)
    for name in ("ve.safetensors", TURBO.t3_file):
        readable_by_all(out / name)
    _save_s3gen(s3gen, out / TURBO.s3gen_file, seed + 2, meta)
    gpt2_tokenizer_files(out)
    if with_conds:
        _write_default_voice(out)


def make_random_multilingual_checkpoint(out_dir: str | Path, seed: int = 0, tiny: bool = False,
                                        with_conds: bool = True) -> Path:
    """Write the multilingual layout: ve.pt and s3gen.pt (pickled state dicts, as the official files are),
    t3_mtl23ls_v2.safetensors, the grapheme tokenizer and Cangjie5_TC.json, random by seed; all or none."""
    with _written_whole(Path(out_dir)) as tmp:
        _write_multilingual(tmp, seed, tiny, with_conds)
    return Path(out_dir)


def _write_multilingual(out: Path, seed: int, tiny: bool, with_conds: bool) -> None:
    from .family import MULTILINGUAL
    from .text.multilingual import CANGJIE_FILE, TOKENIZER_FILE
    from .text.mtl_vocab import cangjie_table, grapheme_tokenizer_json
    meta = {"format": "pt", "cadence_config": "tiny" if tiny else "multilingual", "cadence_seed": str(seed)}
    t3, s3gen, ve = build(ModelConfig.of(MULTILINGUAL, tiny))
    torch.save(random_state(ve, seed), out / MULTILINGUAL.ve_file)
    save_file(random_state(t3, seed + 1), str(out / MULTILINGUAL.t3_file), metadata=meta)
    torch.save(_s3gen_state(s3gen, seed + 2), out / MULTILINGUAL.s3gen_file)
    (out / TOKENIZER_FILE).write_text(json.dumps(grapheme_tokenizer_json(), ensure_ascii=False), encoding="utf-8")
    (out / CANGJIE_FILE).write_text(json.dumps(cangjie_table(seed=seed), ensure_ascii=False), encoding="utf-8")
    for name in (MULTILINGUAL.ve_file, MULTILINGUAL.t3_file, MULTILINGUAL.s3gen_file, TOKENIZER_FILE, CANGJIE_FILE):
        readable_by_all(out / name)
    if with_conds:
        _write_default_voice(out)


def _write_default_voice(out: Path) -> None:
    """conds.pt: the synthetic test voice prepared by the checkpoint itself, as the built-in voice."""
    from .tts import TTS
    tts = TTS.from_dir(out, device="cpu", watermark=False)
    tts.prepare_voice(synthetic_voice(), sample_rate=24000).save_conds_pt(out / "conds.pt")


def _random_tensor(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    """Deterministic values that keep activations in a sane range: N(0, 1/fan_in) weights, unit norm
    scales, identity batch-norm statistics."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    if leaf == "running_var" or leaf == "alpha":
        return torch.ones(shape)
    if leaf == "running_mean":
        return torch.zeros(shape)
    if leaf in ("similarity_weight",):
        return torch.tensor([10.0])
    if leaf in ("similarity_bias",):
        return torch.tensor([-5.0])
    is_norm = any(t in name for t in ("norm", "_ln", ".bn", "layernorm", "block.2", "embed.out.1"))
    if len(shape) == 1 and is_norm and leaf == "weight":
        return torch.ones(shape)
    if len(shape) == 1 or leaf == "bias":
        return torch.randn(shape, generator=gen) * 0.02
    if leaf == "original0":  # weight-norm magnitude: keep the effective weight's scale
        return torch.full(shape, 1.0)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    std = 1.0 / math.sqrt(max(fan_in, 1))
    if "emb" in name or "pos_emb" in name or "pre_attention_query" in name:
        std = 0.02 if "pos" in name else 1.0 / math.sqrt(shape[-1])
    return torch.randn(shape, generator=gen) * std


def random_state(module: nn.Module, seed: int, overrides: dict | None = None) -> dict:
    """Random tensors under the checkpoint's own keys and shapes (packed tensors written as their parts)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in official_shapes(module).items():
        out[name] = overrides[name] if overrides and name in overrides else _random_tensor(name, shape, gen).contiguous()
    return out
