"""What a hostile client or a demanding user sends the server: numbers past what the engine honours, bursts
against the queue limit, malformed JSON, the OpenAI client's other forms; each answered with a clear 4xx (or
served), never a 5xx, and counted."""

import asyncio
import base64
import json

import httpx
import pytest

from tests.unit.test_server import serve_in_thread

SPEECH = "/v1/audio/speech"


@pytest.fixture(scope="module")
def burst_server(tiny_ckpt, tmp_path_factory):
    seen = []

    def spy(tts):  # the engine's load as each accepted request is submitted
        real = tts.submit

        def submit(request):
            seen.append(dict(tts.engine.load))
            return real(request)
        tts.submit = submit
    root = tmp_path_factory.mktemp("voices")
    gen = serve_in_thread(tiny_ckpt, {"max_batch": 2}, prepare=spy, max_queue=2, library=str(root))
    base = next(gen)
    yield base, seen, root
    next(gen, None)


@pytest.fixture(scope="module")
def wide_server(tiny_ckpt, tmp_path_factory):
    yield from serve_in_thread(tiny_ckpt, {"max_batch": 8}, max_queue=1, api_key="k3y",
                               library=str(tmp_path_factory.mktemp("voices")))


def _burst(base, n, body, headers=None):
    async def go():
        async with httpx.AsyncClient(timeout=120, headers=headers) as c:
            return await asyncio.gather(*(c.post(base + SPEECH, json=dict(body, seed=i)) for i in range(n)))
    return asyncio.run(go())


def test_a_burst_cannot_pass_the_queue_limit_together(burst_server):
    base, seen, _ = burst_server
    seen.clear()
    replies = _burst(base, 16, {"input": "A burst of requests at once.", "max_new_tokens": 200, "stream": False,
                                "response_format": "pcm"})
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    # every accepted request found fewer waiting than free slots + max_queue (2 slots, queue 2)
    assert all(s["waiting"] - max(s["max_batch"] - s["running"], 0) < 2 for s in seen), seen
    assert len(seen) == codes.count(200)


def test_free_slots_take_a_burst_without_429(wide_server):
    replies = _burst(wide_server, 8, {"input": "Eight at once.", "max_new_tokens": 20, "response_format": "pcm"},
                     {"Authorization": "bearer k3y"})  # the scheme in lower case is still Bearer
    assert [r.status_code for r in replies] == [200] * 8


@pytest.mark.parametrize("top_k", [9223372036854775808, 1e30, 100001])
def test_numbers_past_the_engine_are_400(burst_server, top_k):
    base, *_ = burst_server
    r = httpx.post(base + SPEECH, content=json.dumps({"input": "Hi.", "top_k": top_k}),
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_k", r.text


def test_malformed_json_names_no_parameter(burst_server):
    base, *_ = burst_server
    r = httpx.post(base + SPEECH, content=b'{"input": "Hi.", "voice": ', headers={"Content-Type": "application/json"})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] is None and err["code"] == "invalid_json"
    assert "not valid JSON" in err["message"]


def test_openai_client_forms_and_lists(burst_server):
    base, *_ = burst_server
    for voice in ({"id": "alloy"}, "marin", "cedar"):
        r = httpx.post(base + SPEECH, json={"model": "tts-1", "input": "Hi.", "voice": voice, "max_new_tokens": 8,
                                            "response_format": "pcm"}, timeout=60)
        assert r.status_code == 200 and r.content, (voice, r.text)
    assert "tts-1" in [m["id"] for m in httpx.get(base + "/v1/audio/models").json()["models"]]


def test_unset_max_new_tokens_fits_the_loaded_model(burst_server):
    base, *_ = burst_server  # the tiny model holds 512 speech positions: the default 1000 is clamped, not refused
    r = httpx.post(base + SPEECH, json={"input": "Hi.", "response_format": "pcm", "seed": 3}, timeout=120)
    assert r.status_code == 200, r.text


def test_sse_usage_counts_output_tokens(burst_server):
    base, *_ = burst_server
    r = httpx.post(base + SPEECH, json={"input": "Hello there.", "stream_format": "sse", "max_new_tokens": 12,
                                        "response_format": "pcm", "seed": 1}, timeout=60)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    done = events[-1]
    assert done["type"] == "speech.audio.done" and all(base64.b64decode(e["audio"]) for e in events[:-1])
    u = done["usage"]
    assert u["output_tokens"] > 0 and u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert u["input_tokens"] > 0  # the engine's own count of the text's tokens


def test_refusals_are_counted_in_metrics(burst_server):
    base, *_ = burst_server
    httpx.post(base + SPEECH, json={"input": ""})
    text = httpx.get(base + "/metrics").text
    assert 'cadence_http_responses_total{code="400",route="/v1/audio/speech"}' in text


def _upload(base, name, data, filename="v.wav", **form):
    return httpx.post(base + "/v1/voices", data={"name": name, **form}, files={"file": (filename, data)}, timeout=120)


def _wav_bytes(samples, subtype="PCM_16"):
    import io

    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, samples, 24000, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_voice_uploads_are_bounded_checked_and_named(burst_server):
    import numpy as np

    from cadence.audio.encode import encode_all
    from cadence.random_checkpoint import synthetic_voice
    base, *_ = burst_server
    bad = synthetic_voice(seconds=4.0).astype(np.float32)
    bad[1000] = np.nan
    r = _upload(base, "nan", _wav_bytes(bad, "FLOAT"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "file" and "NaN" in r.json()["error"]["message"]
    # three minutes of mp3: decoded no further than the source clip the library keeps
    long = encode_all(np.tile(synthetic_voice(seconds=10.0), 18), "mp3", 24000)
    r = _upload(base, "long", long, "long.mp3")
    assert r.status_code == 201 and r.json()["duration_s"] <= 30.0, r.text
    r = _upload(base, "../evil", _wav_bytes(synthetic_voice(seconds=3.0)))
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = _upload(base, "default", _wav_bytes(synthetic_voice(seconds=3.0)))
    assert r.status_code == 400 and r.json()["error"]["param"] == "name" and "built-in voice" in r.text


def test_parallel_creates_of_one_name_get_409(burst_server):
    from cadence.random_checkpoint import synthetic_voice
    base, *_ = burst_server
    data = _wav_bytes(synthetic_voice(seconds=3.0, seed=7))

    async def go():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*(c.post(base + "/v1/voices", data={"name": "twin"},
                                                 files={"file": ("t.wav", data)}) for _ in range(5)))
    replies = asyncio.run(go())
    codes = sorted(r.status_code for r in replies)
    assert codes == [201, 409, 409, 409, 409], [r.text for r in replies]
    assert all(r.json()["error"]["code"] == "voice_exists" for r in replies if r.status_code == 409)


def test_rename_over_http_and_no_paths_in_errors(burst_server):
    from cadence.random_checkpoint import synthetic_voice
    base, _, root = burst_server
    assert _upload(base, "before", _wav_bytes(synthetic_voice(seconds=3.0, seed=9))).status_code == 201
    r = httpx.patch(base + "/v1/voices/before", json={"name": "after"})
    assert r.status_code == 200 and r.json()["name"] == "after"
    assert httpx.get(base + "/v1/voices/before").status_code == 404
    assert _upload(base, "other", _wav_bytes(synthetic_voice(seconds=3.0, seed=10))).status_code == 201
    r = httpx.patch(base + "/v1/voices/after", json={"name": "other"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "voice_exists"
    # a damaged library file: its errors name the file, never the server's directories
    (root / "broken.voice").write_bytes(b"not a voice")
    listing = httpx.get(base + "/v1/voices").json()
    shown = httpx.get(base + "/v1/voices/broken")
    assert listing["errors"] and str(root) not in json.dumps(listing)
    assert shown.status_code == 422 and str(root) not in shown.text and "broken.voice" in shown.text


def test_a_streamed_flac_response_is_readable_by_libsndfile(burst_server):
    import io

    import soundfile as sf
    base, *_ = burst_server
    body = {"input": "Hello there, friend.", "response_format": "flac", "max_new_tokens": 40, "seed": 2}
    flac = httpx.post(base + SPEECH, json=body, timeout=60)
    pcm = httpx.post(base + SPEECH, json=dict(body, response_format="pcm"), timeout=60)
    wav, sr = sf.read(io.BytesIO(flac.content))  # a header with the sample count: not "array is too big"
    assert sr == 24000 and wav.size == len(pcm.content) // 2 > 0


def test_the_published_schema_documents_the_errors_the_server_sends(burst_server):
    base, *_ = burst_server
    spec = httpx.get(base + "/openapi.json").json()
    speech = spec["paths"]["/v1/audio/speech"]["post"]["responses"]
    assert {"400", "404", "413", "429"} <= set(speech) and "422" not in speech  # validation errors are 400
    assert "409" in spec["paths"]["/v1/voices"]["post"]["responses"]
    assert "ErrorBody" in json.dumps(speech["400"])


def test_a_format_without_its_encoder_is_a_clear_400(wide_server, monkeypatch):
    """PyAV missing (a broken install): mp3 is refused up front with the formats that work, not a 500 mid-stream."""
    from cadence.audio import encode
    base = wide_server
    monkeypatch.setattr(encode, "_AV_OK", False)
    r = httpx.post(base + SPEECH, json={"input": "Hello.", "response_format": "mp3", "max_new_tokens": 20},
                   headers={"Authorization": "Bearer k3y"}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and err["code"] == "format_unavailable"
    assert "PyAV" in err["message"] and "wav" in err["message"] and "mp3" not in err["message"].split("available:")[1]
    r = httpx.post(base + SPEECH, json={"input": "Hello.", "response_format": "wav", "max_new_tokens": 20},
                   headers={"Authorization": "Bearer k3y"}, timeout=60)
    assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_startup_clock_counts_from_the_process_start():
    """The start-up timeline's origin is the process's own start (the interpreter and imports count), not the
    moment the module was imported."""
    import subprocess
    import sys
    code = ("import time; time.sleep(0.6); from cadence.server.startup import process_age_s; "
            "print(process_age_s())")
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.6 <= age < 60
