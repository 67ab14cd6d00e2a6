"""The stages of a run as a graph of content keys: what each stage reads (config sections, data hashes, the keys of
the stages before it), its key, and a change described in a few words for ``--dry-run``. Pure functions of a config
and data hashes; :class:`~findistill.pipeline.runner.Run` applies them to a folder."""

from __future__ import annotations

import dataclasses
from typing import Any

from findistill.config import RunConfig, drop_added_defaults
from findistill.data.splits import DatasetSplits, TextSplit
from findistill.io import json_sha256

STAGES = ("teacher_finetune", "teacher_check", "teacher_eval", "label", "augment", "student_baseline", "student_ce",
          "student_distilled", "report", "analyze")

# The stages whose outputs each stage reads: when one of them runs, the stage runs too.
DEPENDS: dict[str, tuple[str, ...]] = {
    "teacher_finetune": (),
    "teacher_check": ("teacher_finetune",),
    "teacher_eval": ("teacher_finetune",),
    "label": ("teacher_finetune",),
    "augment": ("teacher_finetune",),
    "student_baseline": (),
    "student_ce": (),
    "student_distilled": ("label", "augment"),
    "report": ("teacher_check", "teacher_eval", "augment", "student_baseline", "student_ce", "student_distilled"),
    "analyze": ("report",),
}
# A stage's output files; all must exist for it to be up to date (the label stage's are the cache chunks).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "teacher_finetune": ("teacher/config.json",),
    "teacher_check": ("teacher_check.json",),
    "teacher_eval": ("predictions/teacher.npz",),
    "label": (),
    "augment": ("augment/kept.json",),
    "student_baseline": ("predictions/student_baseline.npz",),
    "student_ce": ("predictions/student_ce.npz", "student_ce/config.json"),
    "student_distilled": ("predictions/student_distilled.npz", "student/config.json"),
    "report": ("results.json",),
    "analyze": ("report.html",),
}
# Teacher keys that change how the teacher is run, not the fine-tuned weights.
INFERENCE_ONLY = ("name", "batch_size", "backend", "vllm", "device_map", "quantization")
# Teacher keys of the health gate: what the run accepts of a teacher, not what the teacher is (no teacher or student
# stage key reads them, so keys made before they existed stay valid; changing them re-writes only the report).
GATE = ("min_class_recall", "health_gate")
# Train keys the CE-only student does not read, and keys that change no result (checkpointing).
KD_ONLY = ("alpha", "temperature")
NO_RESULT = ("save_steps", "save_total_limit")



def short_hash(obj: Any) -> str:
    """The first 16 hex digits of the canonical JSON hash: stage keys and the teacher identity key."""
    return json_sha256(obj)[:16]


def data_hashes(splits: DatasetSplits) -> dict[str, str | None]:
    """Content hash (texts and labels) of each split; the transfer split is None when there is none."""
    def h(split: TextSplit | None) -> str | None:
        return None if split is None else short_hash([list(split.texts), [int(y) for y in split.labels]])

    return {"train": h(splits.train), "dev": h(splits.dev), "eval": h(splits.eval),
            "transfer": h(splits.transfer) if splits.transfer is not None and len(splits.transfer) else None,
            "holdout": h(splits.holdout) if splits.holdout is not None and len(splits.holdout) else None}


def _holdout(data: dict) -> dict:
    """``{"holdout": hash}`` when transfer texts are held out for fidelity, else nothing: the keys of runs without
    a held-out slice stay what they were before it existed."""
    return {"holdout": data["holdout"]} if data.get("holdout") else {}


def _without(section: Any, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in dataclasses.asdict(section).items() if k not in keys}


def _teacher_section(teacher: Any, keys: tuple[str, ...]) -> dict:
    """The teacher config without ``keys``, without the health-gate keys and without ``config.ADDED_KEYS`` of the
    teacher at their "as before" value (of the ensemble members too)."""
    def strip(section: dict) -> dict:
        kept = {k: [strip(m) for m in v] if k == "members" else v for k, v in section.items() if k not in GATE}
        return drop_added_defaults(kept, "teacher.")

    return strip(_without(teacher, keys))


def config_for_key(config: RunConfig) -> dict:
    """The whole config as the report stage hashes it: ``config.ADDED_KEYS`` at their "as before" value left out."""
    def members(teacher: dict) -> None:  # an ensemble's members are teacher sections too
        for member in teacher.get("members") or []:
            drop_added_defaults(member, "teacher.")
            members(member)

    out = drop_added_defaults(dataclasses.asdict(config))
    members(out["teacher"])
    return out


def teacher_inputs(config: RunConfig, data: dict) -> dict:
    """What the teacher that labels depends on: its config (but where its layers sit, ``device_map``, and
    ``quantization`` when none, so that keys made before they existed stay valid), the training texts (few-shot
    pool) and the fine-tune."""
    teacher = _teacher_section(config.teacher, ("device_map",) + (("quantization",) if config.teacher.quantization
                                                                   == "none" else ()))
    return {"teacher": teacher, "seed": config.data.seed, "train": data["train"],
            "finetune": stage_key(config, data, "teacher_finetune")}


def stage_inputs(config: RunConfig, data: dict, stage: str) -> dict | None:
    """The inputs ``stage``'s output is made from (JSON-able); None when the stage is off in ``config``."""
    c = config
    if stage == "teacher_finetune":
        if not c.teacher.finetune.enabled:
            return None
        return {"teacher": _teacher_section(c.teacher, INFERENCE_ONLY), "seed": c.data.seed, "train": data["train"],
                "dev": data["dev"], **({"transfer": data["transfer"]} if c.teacher.finetune.self_training.enabled
                                       else {})}
    teacher = short_hash(teacher_inputs(c, data))
    if stage == "teacher_check":
        return {"teacher": teacher, "dev": data["dev"], "train": data["train"], "chunk_size": c.cache.chunk_size}
    if stage == "teacher_eval":
        if not c.evaluate_teacher:
            return None
        return {"teacher": teacher, "eval": data["eval"], "chunk_size": c.cache.chunk_size}
    if stage == "label":
        return {"teacher": teacher, "train": data["train"], "transfer": data["transfer"],
                "eval": data["eval"] if c.evaluate_teacher else None, "chunk_size": c.cache.chunk_size,
                **_holdout(data)}
    if stage == "augment":
        if not c.augment.enabled:
            return None
        return {"augment": dataclasses.asdict(c.augment), "teacher": teacher, "train": data["train"],
                "dev": data["dev"], "eval": data["eval"]}
    student = {"student": dataclasses.asdict(c.student), "eval": data["eval"], **_holdout(data)}
    if stage == "student_baseline":
        return {**student, "seed": c.train.seed}
    trained = {**student, "train_split": data["train"], "dev": data["dev"]}
    if stage == "student_ce":
        return {**trained, "train": drop_added_defaults(_without(c.train, KD_ONLY + NO_RESULT), "train.")} \
            if c.train_ce_student else None
    if stage == "student_distilled":
        return {**trained, "train": drop_added_defaults(_without(c.train, NO_RESULT), "train."),
                "label": stage_key(c, data, "label"),
                "augment": stage_key(c, data, "augment")}
    if stage == "report":
        return {"config": config_for_key(c),
                **{s: stage_key(c, data, s) for s in DEPENDS["report"]}}
    if stage == "analyze":
        return {"report": stage_key(c, data, "report")}
    raise ValueError(f"unknown stage {stage!r}")


def stage_key(config: RunConfig, data: dict, stage: str) -> str | None:
    inputs = stage_inputs(config, data, stage)
    return None if inputs is None else short_hash(inputs)


def downstream(stage: str) -> set[str]:
    out: set[str] = set()
    for name, deps in DEPENDS.items():
        if stage in deps:
            out |= {name} | downstream(name)
    return out


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


_SPLIT_NAMES = {"train": "training texts", "train_split": "training texts", "dev": "dev texts", "eval": "evaluation texts",
                "transfer": "transfer texts"}


def describe_change(old: dict, new: dict, shown: int = 3) -> str:
    """The differences between two input dicts in a few words (``train.alpha: 0.5 -> 0.9``)."""
    a, b = _flatten(old), _flatten(new)
    parts = []
    for path in sorted(set(a) | set(b), key=lambda p: (p.count("."), p)):
        if a.get(path, "<unset>") == b.get(path, "<unset>"):
            continue
        if path in _SPLIT_NAMES:
            parts.append(f"{_SPLIT_NAMES[path]} changed")
        elif path in STAGES or path in ("teacher", "finetune"):
            parts.append(f"{path} inputs changed")
        else:
            parts.append(f"{path}: {a.get(path, '<unset>')} -> {b.get(path, '<unset>')}")
    parts = list(dict.fromkeys(parts))
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return "; ".join(parts[:shown]) + more if parts else "inputs changed"
