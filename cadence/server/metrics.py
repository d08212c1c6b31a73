"""Prometheus metrics of one app (its own registry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cadence_requests", "Speech requests by outcome", ["status"], registry=r)
        self.responses = Counter("cadence_http_responses", "HTTP responses by route and status code, refusals "
                                 "(4xx) included", ["route", "code"], registry=r)
        self.latency = Histogram("cadence_request_seconds", "Speech request latency (submit to last byte)",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttfa = Histogram("cadence_time_to_first_audio_seconds", "Submit to first audio bytes",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("cadence_audio_seconds", "Audio produced", registry=r)
        self.queue_depth = Gauge("cadence_queue_depth", "Requests waiting for a KV slot", registry=r)
        self.running = Gauge("cadence_running_requests", "Requests in the T3 batch", registry=r)
        self.occupancy = Gauge("cadence_batch_occupancy", "Mean running requests per decode step over the batch "
                               "size it ran at, since start", registry=r)
        self.vram = Gauge("cadence_vram_allocated_bytes", "CUDA memory allocated by this process", registry=r)
        # busy seconds per engine stage since start: where the time goes under load (T3 and S3Gen overlap)
        self.stage_seconds = Gauge("cadence_engine_busy_seconds", "Seconds the engine spent per stage since start",
                                   ["stage"], registry=r)
        self.decode_steps = Gauge("cadence_decode_steps", "Batched T3 decode steps since start", registry=r)
        self.slot_steps = Gauge("cadence_decode_request_steps", "Sum over decode steps of the requests decoded in "
                                "each, since start (over cadence_decode_steps: the mean batch)", registry=r)

    def render(self, engine=None) -> bytes:
        if engine is not None:
            load, st = engine.load, engine.stats
            self.queue_depth.set(load["waiting"])
            self.running.set(load["running"])
            self.occupancy.set(st.slot_steps / st.capacity_steps if st.capacity_steps else 0.0)
            for stage, seconds in (("prefill", st.prefill_s), ("t3", st.t3_s), ("s3gen", st.s3gen_s)):
                self.stage_seconds.labels(stage).set(seconds)
            self.decode_steps.set(st.decode_steps)
            self.slot_steps.set(st.slot_steps)
            import torch
            if torch.cuda.is_available():
                self.vram.set(torch.cuda.memory_allocated())
        return generate_latest(self.registry)
