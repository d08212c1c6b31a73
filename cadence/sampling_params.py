"""Per-request generation knobs, with the reference's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields

DEFAULT_MAX_NEW_TOKENS = 1000  # 40 s of speech; TTS.params lowers it to what a smaller checkpoint holds
TOP_K_MAX = 100_000  # any k at or above the speech vocabulary keeps every token; larger ones only overflow

@dataclass(slots=True)
class SamplingParams:
    exaggeration: float | None = None
    """Emotion intensity fed to T3 as one conditioning token (0 = flat, 0.5 neutral, >1 dramatic).
    None uses the voice's own default."""
    cfg_weight: float = 0.5
    """Classifier-free guidance weight on T3's text conditioning; 0 disables the unconditional row."""
    temperature: float = 0.8
    """Softmax temperature for speech-token sampling (> 0)."""
    repetition_penalty: float = 1.2
    """Divides positive / multiplies negative logits of tokens already generated (>= 1 discourages)."""
    min_p: float = 0.05
    """Drop tokens whose probability is below min_p times the most likely token's (0 disables)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 disables)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 disables)."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Upper bound on generated speech tokens (25 tokens = 1 s of audio)."""
    seed: int | None = None
    """Seed of this request's own random stream; None draws a fresh one."""
    language: str | None = None
    """The language of the text, as an id such as "fr" (`cadence.text.multilingual.LANGUAGES`): the multilingual
    model needs one; the original and Turbo speak English only ("en" or unset)."""
    alignment_stop: bool | None = None
    """The multilingual model's end-of-speech rules (chatterbox-tts 0.1.7's alignment analyzer): EOS held back until
    the attention has read the text to its end, forced on a long tail, an alignment repetition or a repeated
    speech token. None: the family's default (on for the multilingual model); False: the model alone decides
    when to stop (the reference's later v3 behaviour). Not a knob of the original model or Turbo."""

    def __post_init__(self):
        def check(ok: bool, msg: str):
            if not ok:
                raise ValueError(msg)

        def num(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name} must be a number, got {v!r}")
            return float(v)

        if self.exaggeration is not None:
            check(0.0 <= num("exaggeration") <= 2.0, f"exaggeration must be in [0, 2], got {self.exaggeration}")
        check(0.0 <= num("cfg_weight") <= 5.0, f"cfg_weight must be in [0, 5], got {self.cfg_weight}")
        check(0.0 < num("temperature") <= 5.0, f"temperature must be in (0, 5], got {self.temperature}")
        check(1.0 <= num("repetition_penalty") <= 5.0,
              f"repetition_penalty must be in [1, 5], got {self.repetition_penalty}")
        check(0.0 <= num("min_p") < 1.0, f"min_p must be in [0, 1), got {self.min_p}")
        check(0.0 < num("top_p") <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        check(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and 0 <= self.top_k <= TOP_K_MAX,
              f"top_k must be an integer in [0, {TOP_K_MAX}], got {self.top_k!r}")
        check(isinstance(self.max_new_tokens, int) and not isinstance(self.max_new_tokens, bool)
              and 1 <= self.max_new_tokens <= 4000,
              f"max_new_tokens must be an integer in [1, 4000], got {self.max_new_tokens!r}")
        check(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)
                                    and 0 <= self.seed < 2 ** 63),
              f"seed must be a non-negative integer, got {self.seed!r}")
        check(self.language is None or isinstance(self.language, str) and 0 < len(self.language.strip()) <= 8,
              f"language must be a language id such as 'fr', got {self.language!r}")
        if self.language is not None:
            self.language = self.language.strip().lower()
        check(self.alignment_stop is None or isinstance(self.alignment_stop, bool),
              f"alignment_stop must be true or false, got {self.alignment_stop!r}")

    @classmethod
    def for_family(cls, family, **knobs) -> "SamplingParams":
        """The knobs a caller set (None = unset) over the model family's defaults (Turbo: temperature 0.8,
        top_k 1000, top_p 0.95, repetition_penalty 1.2). A knob the family's model does not have (Turbo:
        cfg_weight, min_p, exaggeration) is refused when set, never silently ignored."""
        cls.check_names(knobs)
        given = {k: v for k, v in knobs.items() if v is not None}
        unused = sorted(set(given) & set(family.unused_knobs))
        if unused:
            raise ValueError(f"{', '.join(unused)}: not a knob of Chatterbox {family.name} (its model has no "
                             f"{'/'.join(unused)}); leave {'it' if len(unused) == 1 else 'them'} unset")
        params = cls(**{**family.defaults, **given})
        if params.language is not None:
            family.check_language(params.language)
        return params

    def check_family(self, family) -> None:
        """ValueError if these params use a knob the family's model does not have (a non-neutral value)."""
        if self.language is not None:
            family.check_language(self.language)
        neutral = {"cfg_weight": 0.0, "min_p": 0.0, "exaggeration": None, "alignment_stop": None}
        used = [k for k in family.unused_knobs if getattr(self, k) != neutral[k]]
        if used:
            raise ValueError(f"{', '.join(used)}: not a knob of Chatterbox {family.name}; build the params with "
                             f"SamplingParams.for_family or set {'/'.join(used)} to {neutral[used[0]]}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def check_names(cls, knobs) -> None:
        """ValueError naming any key of `knobs` that is not a SamplingParams field."""
        unknown = set(knobs) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
