"""The small CLI pieces the benchmark scripts share (``--set`` overrides, the default TFNS folder, the head of a timing
report); what a benchmark records about its machine is the package's :func:`findistill.machine.machine_info`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


DEFAULT_TFNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitter-financial-news-sentiment"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.alpha=0.9", ...]`` (``--set`` values) -> ``{"train.alpha": 0.9}``, values parsed as YAML."""
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def data_dir(arg: str | None) -> str | None:
    """``--data-dir``, else ``$FINDISTILL_DATA_DIR``, else ``../shared/data/...`` when present, else None (hub)."""
    return arg or os.environ.get("FINDISTILL_DATA_DIR") or (str(DEFAULT_TFNS) if DEFAULT_TFNS.is_dir() else None)


def timing_report_head(title: str, result: dict[str, Any], what: str, shared_note: str) -> list[str]:
    """The first lines of a timing report: title, command, date, wall time, ``what`` ran, machine, load averages,
    and ``shared_note`` in bold when the cores were shared (``result["cores_shared"]``)."""
    m = result["machine"]
    lines = [f"# {title}", "", "```bash", result["command"], "```", "",
             f"Date: {result['date']} · wall time {result['wall_time_s']:.0f} s · {what} · machine: {m.get('cpu')}, "
             f"{m.get('cores')} cores, GPU {m.get('gpu') or 'none'} · torch {m.get('torch')}, "
             f"transformers {m.get('transformers')}" + (f", vllm {m['vllm']}" if m.get("vllm") else ""), "",
             f"Load average (1 min) at start {result['loadavg_start'][0]:.2f}, at end {result['loadavg_end'][0]:.2f} "
             f"on {m.get('cores')} cores.", ""]
    if result["cores_shared"]:
        lines += [f"**The cores were shared with other processes during this run: {shared_note}**", ""]
    return lines
