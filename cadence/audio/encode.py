"""Incremental audio encoders for streamed responses: feed float samples as they are produced, get the
encoded bytes out at once. wav and pcm are written directly (16-bit); flac, mp3, opus (in Ogg) and aac (ADTS)
go through PyAV's codecs (FFmpeg).

FLAC is the exception: its header (STREAMINFO) holds the total sample count, which libsndfile needs (with the
count unknown it reports an endless file), and a header already sent cannot be rewritten. So a FLAC response
is encoded whole at the end, into a seekable buffer the muxer completes the header in."""

from __future__ import annotations

import io
import struct

import numpy as np

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
_AV = {"mp3": ("mp3", "libmp3lame", None), "opus": ("ogg", "libopus", 48000), "aac": ("adts", "aac", None),
       "flac": ("flac", "flac", None)}


_AV_OK: bool | None = None  # whether PyAV imports, found on first use


def available_formats() -> tuple[str, ...]:
    """The response formats this installation can encode: wav and pcm always; flac, mp3, opus and aac where PyAV
    (FFmpeg) imports (the `server` extra installs it)."""
    global _AV_OK
    if _AV_OK is None:
        try:
            import av  # noqa: F401
            _AV_OK = True
        except ImportError:
            _AV_OK = False
    return FORMATS if _AV_OK else tuple(f for f in FORMATS if f not in _AV)


def format_unavailable(fmt: str) -> str | None:
    """Why `fmt` cannot be encoded here (one line), or None when it can."""
    if fmt in available_formats():
        return None
    return (f"response_format {fmt!r} needs PyAV (FFmpeg), which this server lacks (pip install av); "
            f"available: {', '.join(available_formats())}")


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _Sink:
    """A write-only file for PyAV's muxer: collects bytes until the caller takes them."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class StreamEncoder:
    """`write(samples)` -> bytes ready so far; `close()` -> the rest. One instance per response."""

    def __init__(self, fmt: str, sample_rate: int):
        if fmt not in FORMATS:
            raise ValueError(f"unknown response_format {fmt!r}; choose from {', '.join(FORMATS)}")
        self.fmt, self.sample_rate = fmt, sample_rate
        self._header = fmt == "wav"
        self._container = None
        self._held: list[np.ndarray] | None = [] if fmt == "flac" else None
        if fmt in _AV:
            reason = format_unavailable(fmt)
            if reason:
                raise RuntimeError(reason)
            import av
            container_fmt, codec, rate = _AV[fmt]
            self._sink = io.BytesIO() if fmt == "flac" else _Sink()
            self._container = av.open(self._sink, mode="w", format=container_fmt)
            self._stream = self._container.add_stream(codec, rate=rate or sample_rate)
            self._stream.layout = "mono"
            if fmt in ("mp3", "aac", "opus"):
                self._stream.bit_rate = 64000 if fmt != "opus" else 32000
            self._resampler = av.AudioResampler(format=self._stream.codec_context.format.name, layout="mono",
                                                rate=rate or sample_rate)
            self._pts = 0

    def write(self, samples: np.ndarray) -> bytes:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._container is None:
            out = b""
            if self._header:  # streaming WAV: sizes unknown up front, marked as the maximum (as OpenAI's API does)
                out = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
                    "<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16) + b"data" + struct.pack(
                    "<I", 0xFFFFFFFF)
                self._header = False
            return out + _pcm16(samples)
        if self._held is not None:  # FLAC: held until close (see the module's docstring)
            self._held.append(samples)
            return b""
        if samples.size:
            self._encode(samples)
        return self._sink.take()

    def _encode(self, samples: np.ndarray | None) -> None:
        import av
        if samples is None:
            frames = self._resampler.resample(None)
        else:
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
            frames = self._resampler.resample(frame)
        for f in frames:
            for packet in self._stream.encode(f):
                self._container.mux(packet)

    def finish(self, samples: np.ndarray) -> bytes:
        """`write(samples)` then `close()`: the last samples and the end of the stream, as one call."""
        return self.write(samples) + self.close()

    def close(self) -> bytes:
        if self._container is None:
            return self.write(np.zeros(0, np.float32)) if self._header else b""
        if self._held is not None and self._held:
            self._encode(np.concatenate(self._held))
        self._encode(None)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.getvalue() if self._held is not None else self._sink.take()


def encode_all(samples: np.ndarray, fmt: str, sample_rate: int) -> bytes:
    """A whole file; a wav gets its real sizes in the header (a streamed one cannot know them)."""
    if fmt == "wav":
        import soundfile as sf
        buf = io.BytesIO()
        sf.write(buf, np.clip(np.asarray(samples, np.float32), -1, 1), sample_rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()
    enc = StreamEncoder(fmt, sample_rate)
    return enc.write(samples) + enc.close()
