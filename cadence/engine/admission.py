"""The engine's schedule stage: cancelled requests leave their slots, waiting ones are admitted into free slots
with one padded prefill (each alone if that runs out of GPU memory), streams get their window state."""

from __future__ import annotations

import time

from .oom import retry_alone_on_oom
from .rng import RequestRNG
from .state import _Running
from .streaming import StreamState

# Newcomers admitted per round (one padded prefill), so running requests keep decoding between admissions.
ADMIT_MAX = 16


class Admission:
    """Mixed into `Engine`, which provides the slots (`_running`, `max_batch`), the queue (`_waiting`), the
    decoder and the statistics; runs on its GPU thread."""

    def _schedule(self) -> None:
        for slot, r in list(self._running.items()):
            if r.handle.cancelled or r.failed:  # failed: a stream whose window failed on the audio worker
                self.decoder.free(slot)
                del self._running[slot]
                if not r.failed:
                    self._cancel(r)
        free = [s for s in range(self.max_batch) if s not in self._running]
        t0 = time.perf_counter()
        admitted: list[tuple[_Running, tuple]] = []
        while self._waiting and free and len(admitted) < ADMIT_MAX:
            r = self._waiting.popleft()
            if r.handle.cancelled:
                self._cancel(r)
                continue
            try:
                req = r.handle.request
                r.rng = RequestRNG(req.params.seed, self.tts.device)
                prefill = self.tts.prefill(req.text, req.voice, req.params, cfg_pair=self.rows_per_slot == 2)
                prefix = self.tts.voice_prefix(req.voice)  # None where T3 decodes in CUDA graphs
                voice = self.tts.voice_prompt(req.voice) if self.decoder.prompts is not None else None
            except Exception as exc:  # noqa: BLE001 - one bad request fails alone
                self._fail(r, exc)
                continue
            r.slot, r.prefill_len = free.pop(0), prefill.shape[1]
            admitted.append((r, (r.slot, prefill, req.params, req.speech_tokens_only, req.ignore_eos, prefix,
                                 voice)))
        if not admitted:
            return
        admitted = self._admit(admitted)
        now = time.perf_counter()
        for r, _ in admitted:
            req = r.handle.request
            r.t_admit = now
            if req.stream:
                # a stream's windows draw from a stream of their own, apart from the one-piece path's S3Gen draws
                audio_rng = RequestRNG((req.params.seed + 0x5EED) % 2 ** 63, self.tts.device)
                keep_prompt, keep_history = self.tts.config.stream_context_tokens()
                r.stream = StreamState(self.tts.voice_cache.get(req.voice).voice, audio_rng,
                                       prompt_keep=keep_prompt, history_keep=keep_history, speed=req.speed)
            self._running[r.slot] = r
        self.stats.prefill_s += now - t0

    def _admit(self, admitted: list[tuple[_Running, tuple]]) -> list[tuple[_Running, tuple]]:
        """One padded prefill for all (each alone if that runs out of GPU memory). -> those admitted."""
        ok = []
        for idx, out in retry_alone_on_oom(lambda idx: self.decoder.admit_many([admitted[i][1] for i in idx]),
                                           len(admitted)):
            for i in idx:
                if isinstance(out, Exception):
                    self.decoder.free(admitted[i][0].slot)
                    self._fail(admitted[i][0], out)
                else:
                    ok.append(admitted[i])
        return ok

