"""``scripts/bench-service --quick`` for the queue-less peer only (no Node): the benchmark runs end
to end against its own PostgreSQL and Redis and writes its table, results and plot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.mark.skipif(shutil.which("uv") is None, reason="the queue-less peer needs uv")
def test_quick_run_of_the_queueless_peer(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.service", "--quick", "--systems", "queueless",
         "--scenarios", "seed,spread", "--requests", "300", "--results", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted requests/s" in result.stdout and "oversold" in result.stdout
    (data_file,) = tmp_path.glob("service-*.json")
    data = json.loads(data_file.read_text())
    assert data["meta"]["complete"] is True
    runs = {r["scenario"]: r for r in data["runs"]}
    assert set(runs) == {"seed", "spread"}
    # seed: 300 users for 10 tickets; spread: 270 users (10% repeats) over 30 events of 50.
    for name, events, capacity, reserved in (("seed", 1, 10, 10), ("spread", 30, 1_500, 270)):
        figures = runs[name]["figures"]
        assert figures["ok"], figures["failed_checks"]
        assert (figures["requests"], figures["events"]) == (300, events)
        assert (figures["capacity"], figures["reserved"]) == (capacity, reserved)
        assert (figures["oversold"], figures["double_booked"], figures["lost"]) == (0, 0, 0)
        assert figures["accepted"] == 300 and figures["accepted_rps"] > 0
        # No workers in this design: no "back" group.
        assert set(figures["cpu_us_per_request"]) == {
            "front", "redis", "postgres", "driver", "service"
        }  # fmt: skip
    assert data_file.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| accepted requests/s |" in data_file.with_suffix(".md").read_text()
