"""``GET /metrics``: an engine's state in the Prometheus text format, in a registry of its own per app.

Live sessions, speaking sessions, frames sent and skipped, the frame latency histogram, queue depths,
generate batch sizes, process memory (prometheus-client's process collector) and GPU memory; WebRTC
sessions, those sending the shared rest stream now, and the rest streams encoded; per published channel
(label ``channel``): frames pushed, skipped, dropped, reconnects, bytes out, stream-vs-wall drift.
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


class ChannelCollector:
    """Reads the published channels (``{name: Channel}``, filled when they start) at each scrape."""

    COUNTERS = (("frames_pushed", "Frames encoded and pushed", "pushed"),
                ("frames_skipped", "Frames whose picture repeated (the engine skipped them)", "skipped"),
                ("frames_dropped", "Frames not sent (ingest down or too slow)", "dropped"),
                ("reconnects", "Connections re-established after an ingest fault", "reconnects"),
                ("bytes_out", "Encoded bytes pushed", "bytes_out"))

    def __init__(self, channels: dict) -> None:
        self.channels = channels

    def collect(self):
        statuses = [channel.status() for channel in list(self.channels.values())]
        for metric, doc, key in self.COUNTERS:
            family = CounterMetricFamily(f"musetalk_channel_{metric}", doc, labels=["channel"])
            for status in statuses:
                family.add_metric([status["name"]], status[key])
            yield family
        drift = GaugeMetricFamily("musetalk_channel_drift_seconds",
                                  "Wall clock minus stream clock at the last frame pushed", labels=["channel"])
        connected = GaugeMetricFamily("musetalk_channel_connected", "1 while the push is connected",
                                      labels=["channel"])
        for status in statuses:
            drift.add_metric([status["name"]], status["drift_ms"] / 1000)
            connected.add_metric([status["name"]], float(status["connected"]))
        yield drift
        yield connected


class WebRTCCollector:
    """Reads the WebRTC sessions (``{id: Peer}``) and the shared rest streams at each scrape."""

    def __init__(self, peers: dict, rest_streams) -> None:
        self.peers, self.rest_streams = peers, rest_streams

    def collect(self):
        peers = list(self.peers.values())
        yield GaugeMetricFamily("musetalk_webrtc_sessions", "Open WebRTC sessions", value=len(peers))
        yield GaugeMetricFamily("musetalk_webrtc_sharing_rest", "WebRTC sessions sending their avatar's shared "
                                "rest stream now (no encoder of their own)", value=sum(p.sharing for p in peers))
        yield CounterMetricFamily("musetalk_webrtc_rest_encodings", "Rest loops encoded once for all idle viewers "
                                  "(one per avatar and codec)", value=self.rest_streams.encodings)


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
