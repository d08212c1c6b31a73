"""The model families of Chatterbox, each described once: its files, hub repo, server model ids, T3 and its
sampling knobs. A checkpoint's family is detected from the files it holds; everything that differs between
families is read from here (and from each family's model files), never branched on through the engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .layers.alignment import ALIGNED_HEADS
from .models.s3gen import S3GenConfig
from .models.t3 import T3, T3Config
from .models.t3_turbo import T3Turbo, T3TurboConfig
from .text.multilingual import CANGJIE_FILE, LANGUAGES, TOKENIZER_FILE, MultilingualTokenizer, check_language
from .text.normalize import normalize_multilingual_text, normalize_text, normalize_turbo_text
from .text.tokenizer import TextTokenizer
from .text.turbo_tokenizer import TurboTokenizer

# The paralinguistic tags of Turbo's tokenizer: 9 event tags and 10 style tags, added after GPT-2's 50,257
# BPE ids. A real checkpoint's own tokenizer files decide the ids; random checkpoints use this order.
TURBO_TAGS = ("[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]", "[sniff]", "[gasp]", "[chuckle]",
              "[laugh]", "[angry]", "[fear]", "[surprised]", "[whispering]", "[advertisement]", "[dramatic]",
              "[narration]", "[crying]", "[happy]", "[sarcastic]")


@dataclass(frozen=True)
class ModelFamily:
    """What one family of checkpoints is. `unused_knobs` are sampling knobs the family's model does not have:
    a caller that sets one explicitly is refused, never silently ignored."""

    name: str
    model_ids: tuple[str, ...]  # the ids the server lists under /v1/models
    hub_repo: str
    t3_file: str
    s3gen_file: str
    tokenizer_files: tuple[str, ...]  # the tokenizer files a checkpoint must hold
    t3_class: type
    t3_config: T3Config | T3TurboConfig
    t3_tiny_config: T3Config | T3TurboConfig
    s3gen_config: S3GenConfig
    s3gen_tiny_config: S3GenConfig
    cfg_pair: bool  # T3 decodes a conditional/unconditional pair
    defaults: dict  # SamplingParams defaults of this family's reference `generate()`
    unused_knobs: tuple[str, ...]
    silence_tokens: int  # S3GEN_SIL tokens appended to T3's output before S3Gen
    min_voice_seconds: float  # shortest reference recording the family's conditioning accepts
    voice_t3_seconds: int  # how much of the reference T3's prompt tokens are taken from
    voice_lufs: float | None  # loudness the reference is normalised to before preparation (None: as it is)
    normalize: Callable[[str], str]  # the text clean-up before tokenising
    load_tokenizer: Callable[[Path], object]  # checkpoint directory -> tokenizer with encode(text, language) -> ids
    ve_file: str = "ve.safetensors"
    optional_files: tuple[str, ...] = ()  # downloaded from the hub when there, beside conds.pt
    languages: tuple[str, ...] = ("en",)  # the `language` values its model speaks (the first: when unset)
    language_required: bool = False  # True: `language` must be given (or come from the voice)
    later_t3_files: tuple[str, ...] = ()  # later T3 files of the same layout, used where `t3_file` is absent
    aligned_heads: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs the end-of-speech rules watch

    def t3_name(self, path: Path) -> str:
        """The T3 file a checkpoint directory of this family holds: `t3_file`, else the first later one there."""
        for name in (self.t3_file, *self.later_t3_files):
            if (Path(path) / name).is_file():
                return name
        return self.t3_file

    def check_language(self, language: str | None) -> str | None:
        """The language a request speaks, as this family's tokenizer takes it: ValueError for one its model does
        not speak (or for none, where the family needs one)."""
        if language is None and not self.language_required:
            return None
        if language is not None and language.strip().lower() in self.languages:
            return language.strip().lower()
        if self.language_required:
            return check_language(language)
        raise ValueError(f"language {language!r}: Chatterbox {self.name} speaks English only; the multilingual "
                         f"model speaks {', '.join(LANGUAGES)}")

    def build_t3(self, tiny: bool):
        return self.t3_class(self.t3_tiny_config if tiny else self.t3_config)

    def s3gen(self, tiny: bool) -> S3GenConfig:
        return self.s3gen_tiny_config if tiny else self.s3gen_config


ENGLISH = ModelFamily(
    name="english", model_ids=("chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
    hub_repo="ResembleAI/chatterbox", t3_file="t3_cfg.safetensors", s3gen_file="s3gen.safetensors",
    tokenizer_files=("tokenizer.json",), t3_class=T3, t3_config=T3Config.english(),
    t3_tiny_config=T3Config.tiny(), s3gen_config=S3GenConfig.english(), s3gen_tiny_config=S3GenConfig.tiny(),
    cfg_pair=True,
    # no exaggeration: unset, a request takes its voice's own (stored with the voice, 0.5 unless chosen)
    defaults=dict(temperature=0.8, cfg_weight=0.5, repetition_penalty=1.2, min_p=0.05, top_p=1.0, top_k=0),
    unused_knobs=("alignment_stop",), silence_tokens=0, min_voice_seconds=1.0, voice_t3_seconds=6,
    voice_lufs=None, normalize=normalize_text, load_tokenizer=lambda d: TextTokenizer(Path(d) / "tokenizer.json"))

TURBO = ModelFamily(
    name="turbo", model_ids=("chatterbox-turbo", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
    hub_repo="ResembleAI/chatterbox-turbo", t3_file="t3_turbo_v1.safetensors",
    s3gen_file="s3gen_meanflow.safetensors", tokenizer_files=("vocab.json", "merges.txt"),
    t3_class=T3Turbo, t3_config=T3TurboConfig.turbo(), t3_tiny_config=T3TurboConfig.tiny(),
    s3gen_config=S3GenConfig.meanflow(), s3gen_tiny_config=S3GenConfig.tiny(meanflow=True), cfg_pair=False,
    defaults=dict(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, cfg_weight=0.0, min_p=0.0),
    unused_knobs=("cfg_weight", "min_p", "exaggeration", "alignment_stop"), silence_tokens=3, min_voice_seconds=5.0,
    voice_t3_seconds=15, voice_lufs=-27.0, normalize=normalize_turbo_text, load_tokenizer=TurboTokenizer)

MULTILINGUAL = ModelFamily(
    name="multilingual", model_ids=("chatterbox-multilingual", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
    hub_repo="ResembleAI/chatterbox", t3_file="t3_mtl23ls_v2.safetensors", s3gen_file="s3gen.pt",
    tokenizer_files=(TOKENIZER_FILE,), t3_class=T3, t3_config=T3Config.multilingual(),
    t3_tiny_config=T3Config.tiny(text_vocab=2454), s3gen_config=S3GenConfig.english(),
    s3gen_tiny_config=S3GenConfig.tiny(), cfg_pair=True,
    # chatterbox-tts 0.1.7's `ChatterboxMultilingualTTS.generate` defaults (its repetition penalty is 2.0)
    # and its alignment analyzer, which guards against the long tails and repetitions of this model (on by default)
    defaults=dict(temperature=0.8, cfg_weight=0.5, repetition_penalty=2.0, min_p=0.05, top_p=1.0, top_k=0,
                  alignment_stop=True),
    unused_knobs=(), silence_tokens=0, min_voice_seconds=1.0, voice_t3_seconds=6, voice_lufs=None,
    normalize=normalize_multilingual_text, load_tokenizer=MultilingualTokenizer, ve_file="ve.pt",
    optional_files=(CANGJIE_FILE,), languages=tuple(LANGUAGES), language_required=True,
    # the later multilingual T3 (chatterbox's `t3_model="v3"`): the same T3Config, the same other files
    later_t3_files=("t3_mtl23ls_v3.safetensors",), aligned_heads=ALIGNED_HEADS)

FAMILIES = {f.name: f for f in (ENGLISH, TURBO, MULTILINGUAL)}


def family_named(name: str) -> ModelFamily:
    """`english`, `turbo` or `multilingual` -> its description; anything else is a ValueError naming the choices."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def detect_family(path: Path, prefer: str | None = None) -> ModelFamily:
    """The family of a checkpoint directory, from the T3 file it holds; `prefer` names the one to take where
    a directory holds several (a hub snapshot of `ResembleAI/chatterbox` can hold the original and the
    multilingual files side by side)."""
    if prefer is not None:
        wanted = family_named(prefer)
        if any((Path(path) / n).is_file() for n in (wanted.t3_file, *wanted.later_t3_files)):
            return wanted
    for family in FAMILIES.values():
        if any((Path(path) / n).is_file() for n in (family.t3_file, *family.later_t3_files)):
            return family
    names = ", ".join(f.t3_file for f in FAMILIES.values())
    raise ValueError(f"{path} holds no Chatterbox T3 file (looked for {names})")
