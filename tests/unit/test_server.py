"""The speech server, run for real (uvicorn on a loopback port) on the tiny model, called with the `openai`
client and httpx."""

import base64
import io
import json
import socket
import threading
import time

import av
import httpx
import numpy as np
import pytest
import soundfile as sf

from cadence.bench.serve import wait_idle
from cadence.random_checkpoint import synthetic_voice

KEY = "test-key"
SETTINGS: dict = {}  # base URL -> the ServerSettings its app reads (a test may change one between requests)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(tiny_ckpt, tts_options: dict, prepare=None, **settings):
    """A real uvicorn server on a free loopback port, running the app over a tiny-model TTS (given to `prepare`
    first, when set); yields its base URL once /health says ready, stops it afterwards."""
    import uvicorn

    from cadence.server import ServerSettings, create_app
    from cadence.tts import TTS
    tts = TTS.from_dir(tiny_ckpt, device="cpu", watermark=False, **tts_options)
    if prepare is not None:
        prepare(tts)
    s = ServerSettings(model=str(tiny_ckpt), port=_free_port(), **settings)
    srv = uvicorn.Server(uvicorn.Config(create_app(s, tts=tts), host="127.0.0.1", port=s.port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{s.port}"
    SETTINGS[base] = s
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health").json()["status"] == "ready":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    yield base
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def server(tiny_ckpt, tmp_path_factory):
    yield from serve_in_thread(tiny_ckpt, {}, api_key=KEY, max_body_mb=2, max_input_chars=500,
                               library=str(tmp_path_factory.mktemp("voices")))


def _client(base):
    from openai import OpenAI
    return OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)


def _decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768, 24000
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(s)]
        return np.concatenate(frames), s.rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_response_format_decodes_to_audio_of_the_right_length(server, fmt):
    resp = _client(server).audio.speech.create(model="tts-1", voice="alloy", input="Hello there.",
                                               response_format=fmt, extra_body={"seed": 1, "max_new_tokens": 30})
    audio, rate = _decode(resp.content, fmt)
    expected = {"opus": 48000}.get(fmt, 24000)
    assert rate == expected
    tokens = httpx.post(server + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"},
                        json={"input": "Hello there.", "response_format": "pcm", "seed": 1, "max_new_tokens": 30})
    seconds = len(tokens.content) / 2 / 24000
    assert abs(audio.size / rate - seconds) < 0.1  # codec padding at most a frame or two


def test_sse_stream_events_parse(server):
    with httpx.stream("POST", server + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"},
                      json={"input": "Streaming test.", "stream_format": "sse", "response_format": "pcm",
                            "seed": 2, "max_new_tokens": 25}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(pcm) > 0 and len(pcm) % 2 == 0


def test_voice_crud_over_http_and_speech_with_it(server):
    h = {"Authorization": f"Bearer {KEY}"}
    buf = io.BytesIO()
    sf.write(buf, synthetic_voice(seconds=4.0, seed=5), 24000, format="WAV")
    r = httpx.post(server + "/v1/voices", headers=h, data={"name": "anna", "exaggeration": "0.7"},
                   files={"file": ("anna.wav", buf.getvalue(), "audio/wav")}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "anna" and r.json()["exaggeration"] == 0.7
    again = httpx.post(server + "/v1/voices", headers=h, data={"name": "anna"},
                       files={"file": ("anna.wav", buf.getvalue(), "audio/wav")}, timeout=60)
    assert again.status_code == 409
    assert [v["name"] for v in httpx.get(server + "/v1/voices", headers=h).json()["data"]] == ["anna"]
    assert {"id": "anna", "name": "anna"} in httpx.get(server + "/v1/audio/voices", headers=h).json()["voices"]
    assert httpx.get(server + "/v1/voices/anna", headers=h).json()["duration_s"] == pytest.approx(4.0, abs=0.01)
    speech = httpx.post(server + "/v1/audio/speech", headers=h, timeout=60,
                        json={"input": "Hi.", "voice": "anna", "response_format": "wav", "seed": 3, "max_new_tokens": 20})
    assert speech.status_code == 200 and speech.content[:4] == b"RIFF"
    assert httpx.delete(server + "/v1/voices/anna", headers=h).json() == {"id": "anna", "deleted": True}
    assert httpx.get(server + "/v1/voices/anna", headers=h).status_code == 404


@pytest.mark.parametrize("body,status,fragment", [
    ({"input": ""}, 400, "input is empty"),
    ({"input": "x" * 501}, 400, "at most 500"),
    ({"input": "Hi.", "voice": "nobody"}, 404, "voice 'nobody' not found"),
    ({"input": "Hi.", "voice": "../etc/passwd"}, 400, "voice name"),
    ({"input": "Hi.", "temperature": -1}, 400, "temperature"),
    ({"input": "Hi.", "response_format": "ogg"}, 400, "response_format"),
    ({"input": "Hi.", "speed": 4.5}, 400, "speed"),
    ({"input": "Hi.", "model": "whisper-1"}, 404, "model 'whisper-1' not found"),
    ({"voice": "default"}, 400, "input"),
])
def test_bad_requests_get_openai_shaped_4xx(server, body, status, fragment):
    r = httpx.post(server + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"}, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_auth_size_limit_bad_upload_health_metrics_models_playground(server):
    assert httpx.post(server + "/v1/audio/speech", json={"input": "Hi."}).status_code == 401
    big = httpx.post(server + "/v1/voices", headers={"Authorization": f"Bearer {KEY}"}, data={"name": "big"},
                     files={"file": ("big.wav", b"0" * (3 << 20), "audio/wav")})
    assert big.status_code == 413 and "exceeds" in big.json()["error"]["message"]
    bad = httpx.post(server + "/v1/voices", headers={"Authorization": f"Bearer {KEY}"}, data={"name": "bad"},
                     files={"file": ("bad.wav", b"not audio at all", "audio/wav")})
    assert bad.status_code == 400 and "cannot decode audio" in bad.json()["error"]["message"]
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ready"
    marks = health["startup"]  # phase -> seconds after the process started, in order
    assert list(marks)[0] == "app" and list(marks)[-1] == "ready" and list(marks.values()) == sorted(marks.values())
    metrics = httpx.get(server + "/metrics").text
    assert "cadence_requests_total" in metrics and "cadence_time_to_first_audio_seconds_bucket" in metrics
    assert "tts-1" in [m.id for m in _client(server).models.list().data]
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "/v1/audio/speech" in page.text


def test_client_disconnect_cancels_the_request_in_the_engine(server):
    import asyncio

    async def hang_up():
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post(server + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"},
                                  json={"input": "A long request that will be abandoned.", "max_new_tokens": 500,
                                        "seed": 9}, timeout=0.15)

    before = httpx.get(server + "/health").json()["cancelled"]
    asyncio.run(hang_up())
    load = wait_idle(server, 20)
    assert load["running"] == 0 and load["waiting"] == 0
    assert load["cancelled"] == before + 1  # freed by the cancellation, not by finishing


def test_bench_serve_drives_a_separate_server_process(tiny_ckpt, tmp_path):
    from cadence.bench.serve import run_serve_bench
    res = run_serve_bench(str(tiny_ckpt), "cpu", [2], requests_per_client=1, max_tokens=120, cold_probe=2,
                          out_json=str(tmp_path / "s.json"), out_md=str(tmp_path / "s.md"))
    streamed, whole = res["levels"]
    for level in (streamed, whole):
        assert level["ok"] == 2 and not level["errors"] and level["x_realtime"] > 0
        eng = level["engine"]  # the engine's own counters over the level, read from /metrics
        assert eng["decode_steps"] > 0 and eng["t3_busy_s"] > 0 and eng["s3gen_busy_s"] > 0
        assert 1.0 <= eng["mean_batch"] <= 2.0
    assert streamed["ttfa_p50_s"] < streamed["latency_p50_s"]  # audio arrives before the request ends
    assert "| 2 | streamed | 2 / 2 |" in (tmp_path / "s.md").read_text()
    assert res["format"] == "mp3" and res["ready_s"] > 0  # the OpenAI default format, the time to ready
    assert res["startup"]["ready"] > 0 and "its phases: app" in (tmp_path / "s.md").read_text()  # where it went
    for level in (streamed, whole):  # the same requests on the engine alone, beside the HTTP figure
        assert level["engine_only_x_realtime"] > 0 and level["http_share_of_engine"] > 0
    assert res["client"] == "openai"  # through the real OpenAI client
    first = res["first_traffic"]  # sent the moment it said ready, then once warm
    assert first["after_ready"]["ok"] == first["when_warm"]["ok"] == 4 and first["latency_p50_ratio"] > 0
    assert "First traffic: 2 clients" in (tmp_path / "s.md").read_text()


def test_bench_serve_gives_up_a_stuck_level_with_the_servers_stacks(tiny_ckpt, tmp_path):
    from cadence.bench.serve import run_serve_bench
    log = tmp_path / "server.log"
    res = run_serve_bench(str(tiny_ckpt), "cpu", [1], requests_per_client=1, max_tokens=400, modes=(True,),
                          level_timeout_s=0.05, server_log=str(log), out_md=str(tmp_path / "s.md"),
                          engine_only=False, cold_probe=0)
    assert res["levels"][0]["timed_out"] and "(gave up)" in (tmp_path / "s.md").read_text()
    text = log.read_text()
    assert "most recent call first" in text and "cadence/engine" in text  # SIGUSR1: every thread's stack


def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    run = subprocess.run([exe, "run", server + "/openapi.json", "--checks", "not_a_server_error", "--max-examples",
                          "20", "--request-timeout", "60", "-H", f"Authorization: Bearer {KEY}", "--seed", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert " passed" in run.stdout


def test_playground_in_headless_chromium(server, tmp_path):
    """The playground as a user meets it: the loaded model's knobs with their defaults, a voice uploaded,
    previewed and deleted, speech streamed and played as it arrives (Speak disabled meanwhile), a bad knob
    reported inline, no console errors, and a page that renders (screenshots checked) on a desktop and a phone."""
    import io
    import shutil

    from PIL import Image
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it where apt is usable)")
    wav = tmp_path / "mine.wav"
    sf.write(str(wav), synthetic_voice(seconds=3.0, seed=8), 24000)

    def rendered(png: bytes) -> Image.Image:
        img = Image.open(io.BytesIO(png)).convert("RGB")
        colors = img.resize((64, 64)).getcolors(64 * 64)
        assert len(colors) > 8, "the page rendered blank"
        return img

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('cfg_weight') !== null")
        assert page.get_attribute("#cfg_weight", "placeholder") == "0.5"  # the family's default
        assert page.get_attribute("#exaggeration", "placeholder") == "the voice's"  # unset: the voice's own
        assert "Chatterbox english" in page.inner_text("#model")
        page.wait_for_function("document.getElementById('voiceError').textContent.includes('API key')")
        page.fill("#apikey", KEY)
        page.dispatch_event("#apikey", "change")
        page.wait_for_function("document.querySelectorAll('#voice option').length >= 1")
        page.fill("#voiceName", "browser-voice")
        page.set_input_files("#voiceFile", str(wav))
        page.click("#upload")
        page.wait_for_function("document.getElementById('status').textContent.includes('voice added')", timeout=60000)
        assert page.input_value("#voice") == "browser-voice"
        page.fill("#text", "Hello from the browser.")
        page.fill("#seed", "5")
        page.fill("#max_new_tokens", "40")
        page.select_option("#format", "wav")  # streamed: played as it arrives, a wav to download
        page.evaluate("window.seen = []; new MutationObserver(() => seen.push(document.getElementById('speak')"
                      ".disabled)).observe(document.getElementById('speak'), {attributes: true})")
        page.click("#speak")
        page.wait_for_function("/^(done)/.test(document.getElementById('status').textContent) || "
                               "document.getElementById('speakError').textContent", timeout=120000)
        assert page.inner_text("#status").startswith("done"), page.inner_text("#speakError")
        assert page.evaluate("seen")[:1] == [True] and page.evaluate("seen")[-1] is False  # disabled while busy
        page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30000)
        duration = page.evaluate("document.getElementById('player').duration")
        href = page.get_attribute("#download", "href")
        desktop = rendered(page.screenshot(full_page=True))
        page.fill("#temperature", "9")  # out of range: refused inline, before any request
        page.click("#speak")
        page.wait_for_function("document.getElementById('speakError').textContent.length > 0", timeout=30000)
        assert "temperature" in page.inner_text("#speakError")
        page.fill("#temperature", "")
        page.click("#voices li:has-text('browser-voice') >> text=preview")
        page.wait_for_function("/^done/.test(document.getElementById('status').textContent)", timeout=120000)
        page.click("#voices li:has-text('browser-voice') >> text=delete")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('deleted')", timeout=30000)
        assert "browser-voice" not in page.inner_text("#voices")
        page.set_viewport_size({"width": 390, "height": 844})
        phone = rendered(page.screenshot(full_page=True))
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
        browser.close()
    assert duration > 0.1 and href.startswith("blob:")
    assert desktop.width >= 800 and phone.width == 390
    assert errors == [], errors
