"""`findistill config` and docs/config.md: every key with its type, default, range and help, from one source."""

from __future__ import annotations

from pathlib import Path

import pytest

from findistill.__main__ import main
from findistill.config import ConfigError, describe_keys, load_config

REPO = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_current():
    from findistill.cli import render_config_markdown

    assert (REPO / "docs" / "config.md").read_text() == render_config_markdown(), \
        "docs/config.md is stale: run `findistill config --markdown > docs/config.md`"


def test_every_key_has_help_and_the_shown_ranges_are_the_checks(tmp_path):
    rows = {r.key: r for r in describe_keys()}
    assert all(r.help for r in rows.values())
    assert rows["train.alpha"].range == "must be in [0, 1]"
    assert rows["train.lr_scheduler"].range.startswith("one of linear, cosine, constant")
    # the range shown is the message a value outside it gets
    path = tmp_path / "c.yaml"
    path.write_text("train: {alpha: 1.5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"train.alpha: {rows['train.alpha'].range}, got 1.5"


def test_config_command_marks_the_values_a_config_changes(capsys):
    assert main(["config", str(REPO / "configs" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    lines = {ln.split(":")[0].strip("* ").strip(): ln for ln in out.splitlines() if not ln.startswith("      ")}
    assert lines["student.num_layers"].startswith("* ") and lines["student.num_layers"].endswith("-> 2")
    assert lines["train.alpha"].startswith("  ")  # the demo keeps the default
    assert set(lines) == {r.key for r in describe_keys()}
