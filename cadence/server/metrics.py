"""Prometheus metrics of one app (its own registry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cadence_requests", "Speech requests by outcome", ["status"], registry=r)
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

    def render(self, engine=None) -> bytes:
        if engine is not None:
            load, st = engine.load, engine.stats
            self.queue_depth.set(load["waiting"])
            self.running.set(load["running"])
            self.occupancy.set(st.slot_steps / st.capacity_steps if st.capacity_steps else 0.0)
            import torch
            if torch.cuda.is_available():
                self.vram.set(torch.cuda.memory_allocated())
        return generate_latest(self.registry)
