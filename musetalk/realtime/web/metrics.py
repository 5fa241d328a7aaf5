"""``GET /metrics``: an engine's state in the Prometheus text format, in a registry of its own per app.

Live sessions, speaking sessions, frames sent and skipped, the frame latency histogram, queue depths,
generate batch sizes, process memory (prometheus-client's process collector) and GPU memory.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class EngineCollector:
    """Reads ``engine`` at each scrape."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        engine, stats = self.engine, self.engine.stats.snapshot()
        yield GaugeMetricFamily("musetalk_sessions", "Open WebSocket sessions", value=engine.sessions)
        yield GaugeMetricFamily("musetalk_speaking_sessions", "Sessions rendering speech", value=engine.speaking)
        yield GaugeMetricFamily("musetalk_queue_depth", "Frames and messages waiting, all sessions",
                                value=engine.queue_depth)
        yield CounterMetricFamily("musetalk_frames_sent", "Frames sent to clients", value=stats["frames_sent"])
        yield CounterMetricFamily("musetalk_frames_skipped", "Frames skipped (late or slow client)",
                                  value=stats["frames_skipped"])
        yield CounterMetricFamily("musetalk_audio_refused", "Audio chunks refused: too far ahead of their "
                                  "session's clock (--max-audio-ahead-s)", value=stats["audio_refused"])
        buckets, total = stats["latency"]
        yield HistogramMetricFamily("musetalk_frame_latency_seconds",
                                    "Speech frames sent: audio complete (look-ahead included) to composited",
                                    buckets=buckets, sum_value=total)
        buckets, total = stats["batch_sizes"]
        yield HistogramMetricFamily("musetalk_generate_batch_size", "Frames per model call",
                                    buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("musetalk_gpu_memory_bytes", "GPU memory allocated by torch (0 on CPU)",
                                value=_gpu_bytes(engine.mt.device))


def _gpu_bytes(device) -> int:
    import torch

    device = torch.device(device)
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def engine_registry(engine) -> CollectorRegistry:
    """A fresh registry with ``engine``'s metrics and the process's (memory, CPU)."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    ProcessCollector(registry=registry)
    return registry
