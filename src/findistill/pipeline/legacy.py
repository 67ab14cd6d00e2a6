"""Run folders written before stage keys and before the chunked teacher cache: their outputs are adopted under the
config they were made with, and their whole-split teacher logits are read while the teacher is unchanged."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from findistill.config import ConfigError, load_config
from findistill.data.splits import TextSplit
from findistill.pipeline.stages import STAGES, short_hash, stage_inputs, teacher_inputs

log = logging.getLogger(__name__)


def adopt(run: Any) -> dict:
    """Records for a folder written before stage keys: its outputs, under the config it was made with."""
    records: dict = {"stages": {}}
    if not run.out.is_dir():
        return records
    saved = run.out / "config.yaml"
    config = run.config
    if saved.is_file():
        try:
            config = load_config(saved)
        except ConfigError as err:
            raise ConfigError("", f"{run.out} was written by an older findistill under a config this version "
                                  f"cannot read ({err}); use another --out") from None
    if config.data != run.config.data:
        return records  # its splits are not the current ones: nothing can be vouched for
    for stage in STAGES:
        inputs = stage_inputs(config, run.data_hashes, stage)
        if inputs is None or not run.outputs_present(stage):
            continue
        if stage == "label" and not any((run.out / "teacher_logits").glob("*.safetensors")):
            continue
        records["stages"][stage] = {"key": short_hash(inputs), "inputs": inputs, "finished": "adopted"}
    if (run.out / "teacher_logits").is_dir():
        records["legacy_teacher_logits"] = short_hash(teacher_inputs(config, run.data_hashes))
    if records["stages"]:
        log.info("[stages] %s predates stage keys; adopted %s", run.out, ", ".join(records["stages"]))
    return records



def legacy_teacher_logits(run: Any, split: TextSplit, key_extra: dict | None) -> np.ndarray | None:
    """``<run>/teacher_logits/`` of a folder labelled before the chunked cache, while its teacher is unchanged."""
    from findistill.teachers.cache import cache_key, load_cached, texts_hash

    folder = run.out / "teacher_logits"
    if not folder.is_dir() or run.stage_records().get("legacy_teacher_logits") != run.teacher_key():
        return None
    key = cache_key({"run_split": split.name, **(key_extra or {})}, split.texts)
    return load_cached(folder, key, n=len(split), texts_sha256=texts_hash(split.texts))
