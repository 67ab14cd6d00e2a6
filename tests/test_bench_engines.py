"""benchmarks/bench_engines.py without running an engine: arguments and the report (a shared-cores warning)."""

from __future__ import annotations

import pytest

from conftest import load_benchmark

pytestmark = pytest.mark.slow  # a benchmark script end to end


def _result(load: float) -> dict:
    row = {"backend": "hf", "dtype": "float32", "load_s": 3.0, "label_texts": 300, "label_s": 12.0,
           "label_texts_per_s": 25.0, "paraphrase_texts": 48, "paraphrase_s": 30.0, "paraphrase_texts_per_s": 1.6,
           "paraphrase_new_tokens_per_s": 40.0}
    return {"command": "python benchmarks/bench_engines.py", "date": "2026-11-30T06:00:00+00:00", "wall_time_s": 99.0,
            "model": "smollm2-135m-instruct", "machine": {"cpu": "X", "cores": 2, "torch": "2.13.0"},
            "rows": [row], "loadavg_start": [load, 0, 0], "loadavg_end": [load, 0, 0], "cores_shared": load > 1.0,
            "agreement": {"argmax_agreement": 1.0, "max_abs_logprob_diff": 1e-5, "mean_abs_logprob_diff": 1e-6}}


def test_report_says_plainly_when_cores_were_shared():
    bench = load_benchmark("bench_engines")
    shared = bench.render(_result(9.5))
    assert "The cores were shared" in shared and "| hf | float32 | 3.0 | 25.0 (300 texts) | 1.6 (48 texts)" in shared
    assert "The cores were shared" not in bench.render(_result(0.1))
    args = bench.parse_args(["--backends", "hf", "--n-label", "5"])
    assert args.backends == "hf" and args.n_label == 5 and args.max_model_len == 1024
