"""Prometheus metrics in the text exposition format (no client library needed).

  herd_requests_total{endpoint, status}        counter, every HTTP request by route and status
  herd_request_latency_seconds{endpoint}       histogram, request start to last byte (streams included)
  herd_time_to_first_token_seconds             histogram, generation requests: start to first token
  herd_prompt_tokens_total                     counter, prompt tokens the engine has processed
  herd_generation_tokens_total                 counter, tokens the engine has generated
  herd_engine_requests_total                   counter, requests the engine has accepted
  herd_num_requests_running / _waiting         gauges, the engine scheduler's queues
  herd_kv_blocks_used / herd_kv_blocks_total   gauges, paged KV cache blocks
  herd_kv_cache_usage_ratio                    gauge, used / total
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Histogram:
    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out = []
        for bound, count in zip(self.buckets, self.counts, strict=True):
            out.append(f"{name}_bucket{_labels({**labels, 'le': _number(bound)})} {count}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """Server-side counters plus whatever the engine reports; `render()` is the /metrics body."""

    def __init__(self, engine_stats: Callable[[], Any] | None = None, model_name: str = "") -> None:
        self.engine_stats = engine_stats
        self.model_name = model_name
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.ttft = Histogram()

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (endpoint, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.setdefault(endpoint, Histogram()).observe(seconds)

    def observe_first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")

        with self._lock:
            requests = sorted(self.requests.items())
            metric(
                "herd_requests_total",
                "counter",
                "HTTP requests by endpoint and status code.",
                [({"endpoint": ep, "status": st}, n) for (ep, st), n in requests],
            )
            lines.append("# HELP herd_request_latency_seconds Time from request start to the last byte sent.")
            lines.append("# TYPE herd_request_latency_seconds histogram")
            for ep, hist in sorted(self.latency.items()):
                lines.extend(hist.lines("herd_request_latency_seconds", {"endpoint": ep}))
            lines.append("# HELP herd_time_to_first_token_seconds Time from request start to its first generated token.")
            lines.append("# TYPE herd_time_to_first_token_seconds histogram")
            lines.extend(self.ttft.lines("herd_time_to_first_token_seconds", {}))

        stats = self.engine_stats() if self.engine_stats is not None else None
        if stats is not None:
            model = {"model_name": self.model_name}

            def get(field: str) -> float:
                value = stats.get(field, 0) if isinstance(stats, dict) else getattr(stats, field, 0)
                return value or 0

            metric("herd_prompt_tokens_total", "counter", "Prompt tokens processed by the engine.",
                   [(model, get("prompt_tokens_total"))])
            metric("herd_generation_tokens_total", "counter", "Tokens generated by the engine.",
                   [(model, get("generation_tokens_total"))])
            metric("herd_engine_requests_total", "counter", "Requests accepted by the engine.",
                   [(model, get("requests_total"))])
            metric("herd_num_requests_running", "gauge", "Requests in the running batch.", [(model, get("running"))])
            metric("herd_num_requests_waiting", "gauge", "Requests waiting to be scheduled.", [(model, get("waiting"))])
            used, total = get("kv_blocks_used"), get("kv_blocks_total")
            metric("herd_kv_blocks_used", "gauge", "KV cache blocks in use.", [(model, used)])
            metric("herd_kv_blocks_total", "gauge", "KV cache blocks in the pool.", [(model, total)])
            metric("herd_kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use.",
                   [(model, used / total if total else 0.0)])
        return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """`{'name{labels}': value}` from exposition text (for tests and quick checks)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out
