"""`cadence bench`: one short run of each mode reports every figure with a sane type and keeps
heavy libraries out of the agent process. Speed is measured, not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from agent.evaluation import bench
from agent.events import Kind

NUMBERS = ("callback_us_median", "callback_us_p99", "events_per_s", "score_ms_p99", "train_ms",
           "train_import_s", "rss_mb", "cpu_pct", "cpu_idle_pct", "idle_wakeups_per_s",
           "startup_s")


def run_bench(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-m", "agent", "bench", "--json", "--duration", "3",
                          *args], capture_output=True, text=True, timeout=240,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def check(result: dict) -> None:
    for key in NUMBERS:
        assert isinstance(result[key], (int, float)) and not isinstance(result[key], bool), key
        assert result[key] >= 0, key
    assert result["heavy_modules_loaded"] == []
    assert result["state"] == "protecting"
    assert isinstance(result["dropped_events"], int)
    assert result["callback_samples"] > 0 and result["callback_us_median"] > 0
    assert result["rss_mb"] > 1 and result["startup_s"] > 0 and result["events_per_s"] > 0


def test_synthetic_schedule_is_human_paced():
    import random
    schedule = bench.input_schedule(random.Random(1), 20.0)
    presses = [t for t, what, _ in schedule if what == 0]
    moves = [t for t, what, _ in schedule if what == 2]
    assert 6 <= len(presses) / 20 <= 10 and 50 <= len(moves) / 20 <= 70
    events = bench.to_events(schedule)
    downs = sum(e.kind == Kind.DOWN for e in events)
    ups = sum(e.kind == Kind.UP for e in events)
    assert downs == ups == len(presses)


def test_bench_synthetic_reports_every_figure():
    result = run_bench()
    check(result)
    assert result["mode"] == "synthetic"
    assert result["hook_events"] == result["input_events_sent"] > 0


def test_bench_x11_measures_the_real_hooks(xserver):
    result = run_bench("--x11", "--display", xserver.name)
    check(result)
    assert result["mode"] == "x11"
    assert result["hook_events"] > 0.9 * result["input_events_sent"] > 0
