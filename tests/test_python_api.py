"""The Python API: the names `findistill` exports, and docs/python.md's example run on tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import findistill

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_exported_names_resolve_to_their_modules():
    from findistill.training.losses import distillation_loss
    from findistill.pipeline.runner import Run, run
    from findistill.training.trainer import DistillationTrainer

    assert findistill.run is run and findistill.Run is Run
    assert findistill.distillation_loss is distillation_loss and findistill.DistillationTrainer is DistillationTrainer
    assert set(findistill.__all__) <= set(dir(findistill))
    for name in findistill.__all__:
        assert getattr(findistill, name) is not None


def test_the_docs_example_runs_on_tiny_models(tmp_path, tiny_llama_dir, tiny_bloom_dir, tiny_tfns_dir, capsys):
    from test_pipeline import write_config

    config = write_config(tmp_path / "tiny.yaml", tiny_llama_dir, tiny_bloom_dir)
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    for old, new in (("configs/demo.yaml", str(config)), ("runs/notebook", str(tmp_path / "notebook")),
                     ("../shared/data/twitter-financial-news-sentiment", str(tiny_tfns_dir))):
        assert old in code
        code = code.replace(old, new)
    exec(compile(code, str(DOC), "exec"), {})  # noqa: S102 - the repository's own documentation example
    printed = capsys.readouterr().out
    assert "student_distilled  accuracy" in printed and "'label':" in printed
    assert yaml.safe_load((tmp_path / "notebook" / "config.yaml").read_text())["train"]["epochs"] == 1
