"""The fast benchmarks run end to end in a tiny configuration (they print ratios; timings are not asserted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_vme_overhead_benchmark_prints_both_ratios():
    out = _run("vme_overhead.py", "--model", "tiny", "--steps", "1", "--batch", "4", "--length", "32")
    assert "(a) VME step / plain step" in out and "(b) naive capture / one-layer capture" in out
    assert all(name in out for name in ("plain", "vme", "vme-naive", "reference"))


def test_tokenize_benchmark_prints_throughput_and_cached_load():
    out = _run("tokenize_throughput.py")
    assert "pairs/s" in out and "second load (cached)" in out
