"""Guarded serving's latency overhead per request: `herd serve` with and without `--guard`.

Two servers over SmolLM2-135M-Instruct in this process (each its own engine), one plain and one with a
ProbeGuard (input and output guard, non-streamed answers judged whole); the same chat requests (greedy,
`--max-tokens` each) go to both in alternating rounds. Reports the median latency of each, the
difference on requests the guard let through, how many it blocked (those return without generating),
and the guard's own time per check.

    python benchmarks/guard_serving.py --guard runs/guard        # a saved guard (herd guard train)
    python benchmarks/guard_serving.py                           # trains a quick one (200 prompts) first
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from host import describe  # noqa: E402

PROMPTS = ["Name three primary colors.", "What is the capital of Japan?", "Write a haiku about rain.",
           "Give me a synonym for happy.", "How many legs does a spider have?", "What is 12 times 12?",
           "Suggest a name for a pet goldfish.", "What season comes after winter?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guard", default=None, help="a saved probe guard (default: train one on 200 prompts)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    import httpx
    from serve_helpers import running_server

    from herd.loading import load_model
    from herd.safety.probe_guard import ProbeGuard
    from herd.serve.guarding import ServeGuard

    loaded = load_model("smollm2-135m-instruct")
    if args.guard:
        guard = ProbeGuard.load(args.guard, loaded)
    else:
        import random

        from herd.safety.guard_data import guard_split

        guard = ProbeGuard(loaded).fit(random.Random(0).sample(guard_split("train"), 200))
    checks = []
    for prompt in PROMPTS:
        start = time.perf_counter()
        guard.classify(prompt)
        checks.append(time.perf_counter() - start)

    def timed(base: str, prompt: str) -> tuple[float, str]:
        start = time.perf_counter()
        body = httpx.post(base + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": prompt}], "max_tokens": args.max_tokens, "temperature": 0}).json()
        return time.perf_counter() - start, body["choices"][0]["finish_reason"]

    plain_times, guarded_times, blocked = [], [], 0
    with running_server(loaded, kv_cache_bytes=64 << 20) as plain, \
            running_server(loaded, kv_cache_bytes=64 << 20,
                           configure_app=lambda app: setattr(app.state.served, "guard", ServeGuard(guard))) as guarded:
        timed(plain.base_url, PROMPTS[0])  # warm both
        timed(guarded.base_url, PROMPTS[0])
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                t_plain, _ = timed(plain.base_url, prompt)
                t_guarded, finish = timed(guarded.base_url, prompt)
                if finish == "content_filter":
                    blocked += 1
                    continue
                plain_times.append(t_plain)
                guarded_times.append(t_guarded)
    print(describe())
    print(f"guard check (classify one prompt): median {statistics.median(checks) * 1e3:.1f} ms")
    print(f"{len(PROMPTS) * args.rounds} requests each, max_tokens {args.max_tokens}; guard blocked {blocked}")
    if plain_times:
        p, g = statistics.median(plain_times), statistics.median(guarded_times)
        print(f"passed requests: plain median {p * 1e3:.0f} ms, guarded {g * 1e3:.0f} ms, "
              f"overhead {(g - p) * 1e3:.0f} ms ({g / p:.2f}x)")


if __name__ == "__main__":
    main()
