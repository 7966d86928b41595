"""The fast benchmarks run end to end in a tiny configuration (they print ratios; timings are not asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.e2e
def test_vme_overhead_benchmark_prints_both_ratios():
    out = _run("vme_overhead.py", "--model", "tiny", "--steps", "1", "--batch", "4", "--length", "32")
    assert "(a) VME step / plain step" in out and "(b) naive capture / one-layer capture" in out
    assert all(name in out for name in ("plain", "vme", "vme-naive", "reference"))


@pytest.mark.e2e
def test_calibration_benchmark_prints_every_scenario():
    out = _run("calibration.py", "--reps", "40")
    for scenario in ("3 seeds  shared", "3 seeds  independent", "5 seeds  shared", "5 seeds  independent"):
        assert scenario in out, scenario
    assert out.count("power(+2 pt)") == 6 and "paired-by-seed t" in out and "Welch t (unpaired)" in out


@pytest.mark.e2e
def test_tokenize_benchmark_prints_throughput_and_cached_load():
    out = _run("tokenize_throughput.py")
    assert "pairs/s" in out and "second load (cached)" in out


@pytest.mark.e2e
@pytest.mark.parametrize("lengths", ["full", "pocket"])
def test_vme_vs_reference_benchmark_prints_speed_memory_profile_and_exactness(lengths):
    """``pocket``: real lengths, so the reference runs 32 positions and the fast step fewer plus the padded rows."""
    out = _run("vme_vs_reference.py", "--model", "tiny", "--steps", "1", "--batch", "4", "--length", "32",
               "--check-steps", "1", "--lengths", lengths)
    assert "speed-up of this project's step (fast) over the reference" in out
    assert "reference / fast per phase: forward" in out
    fast = next(line for line in out.splitlines() if line.startswith("fast ") and "x" not in line)
    assert len(fast.split()) == 6  # forward, backward, optimizer, capture, sum
    for variant in ("fast-full", "fast"):  # exact up to float reordering, not merely printed (study/exactness.py)
        line = next(line for line in out.splitlines() if line.startswith(f"{variant} vs reference"))
        figures = dict(re.findall(r"(tolerance|determined|noise-level) ([-+.\de]+)", line))
        assert float(figures["tolerance"]) <= 1 and float(figures["determined"]) < 1e-6, line
        assert float(figures["noise-level"]) <= 2 * 2e-5 + 1e-6, line  # Adam's flip bound at the benchmark's lr
    assert "step memory" in out and out.count(" MiB") == 3


@pytest.mark.e2e
def test_eval_throughput_benchmark_prints_both_speed_ups_and_equal_scores(e5_small):
    out = _run("eval_throughput.py", "--pairs", "20", "--examples", "20", "--topic-languages", "de,ja",
               "--data-dir", str(FIXTURES))
    assert "speed-up over the plain reference: tatoeba" in out and "pocket-topic" in out.splitlines()[-1]
    rows = [line.split() for line in out.splitlines() if line.startswith(("tatoeba de", "pocket-topic targets"))]
    assert len(rows) == 2
    for row in rows:  # the same scores as the plain loop; every prediction agrees
        assert float(row[-2]) <= 1e-6 and row[-1] in ("-", "0"), row


@pytest.mark.e2e
def test_gpu_throughput_benchmark_writes_rows_of_the_plans_table_on_the_cpu(tmp_path):
    """The GPU benchmark's smoke mode on the CPU: a tiny shape's plain, VME and evaluation rows and the task rows, in
    the throughput table's format; a CPU has no MFU."""
    import json

    from study.core.throughput import FIXED, Measurement

    out = _run("gpu_throughput.py", "--smoke", "--out", str(tmp_path / "rows.json"))
    rows = [Measurement(**row) for row in json.loads((tmp_path / "rows.json").read_text())]
    assert {(r.objective, r.lengths) for r in rows} == {(o, lengths) for o in ("plain", "vme", "eval")
                                                        for lengths in (FIXED, "pocket-topic")}
    assert all(r.device == "cpu" and r.model == "tiny" and r.per_s > 0 and r.mfu is None for r in rows)
    assert "tiny      vme" in out


@pytest.mark.e2e
def test_hf_trainer_search_benchmark_prints_the_ratio_and_both_selections():
    """The smoke mode: one trial of two steps through HF Trainer's Ray search and through ``study tune``."""
    pytest.importorskip("accelerate")  # the bench extra: HF Trainer needs it
    out = _run("hf_trainer_search.py", "--smoke")
    assert re.search(r"^wall-time ratio, search phase \(this tool / Trainer\): \d+\.\d+", out, re.M), out
    for side in ("HF Trainer", "study tune"):
        assert re.search(rf"^{side} selected: lr=\S+; English dev accuracy [\d.]+, target average [\d.]+;", out,
                         re.M), out
    assert re.search(r"^selected scores agree: English dev (yes|no) .*, target average (yes|no) ", out, re.M), out
