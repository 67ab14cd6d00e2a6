"""benchmarks/bench_label_scaling.py without running a teacher: the launch commands and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_benchmark

pytestmark = pytest.mark.slow  # a benchmark script end to end


def test_commands_and_report():
    bench = load_benchmark("bench_label_scaling")
    one = bench.label_command(1, Path("c.yaml"), Path("out"), None)
    two = bench.label_command(2, Path("c.yaml"), Path("out"), "tfns")
    assert one[1:] == ["-m", "findistill", "label", "c.yaml", "--out", "out"]
    assert two[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    assert two[-8:] == ["-m", "findistill", "label", "c.yaml", "--out", "out", "--data-dir", "tfns"]
    rows = [{"processes": 1, "threads_per_process": 2, "wall_s": 100.0, "texts_per_s": 20.0, "speedup": 1.0,
             "same_cache": True},
            {"processes": 2, "threads_per_process": 1, "wall_s": 60.0, "texts_per_s": 33.3, "speedup": 1.67,
             "same_cache": False}]
    result = {"command": "python benchmarks/bench_label_scaling.py", "date": "2026-11-30T09:00:00+00:00",
              "wall_time_s": 160.0, "model": "smollm2-135m-instruct", "n": 2000, "chunk_size": 100,
              "machine": {"cpu": "X", "cores": 2, "torch": "2.13.0"}, "rows": rows,
              "loadavg_start": [3.0, 0, 0], "loadavg_end": [3.0, 0, 0], "cores_shared": True}
    report = bench.render(result)
    assert "| 2 | 1 | 60.0 | 33.3 | 1.67 | NO |" in report and "The cores were shared" in report
