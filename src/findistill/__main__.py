"""`findistill <command> ...`: a small table from command names to the functions that run them."""

from __future__ import annotations

import importlib
import logging
import sys

# name -> (module, function, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("findistill.cli", "run_main", "run every stage of a config: teacher, labels, students, report"),
    "label": ("findistill.cli", "label_main", "write the teacher's soft labels for the training texts"),
    "distill": ("findistill.cli", "distill_main", "train the distilled student (labels first if needed)"),
    "evaluate": ("findistill.cli", "evaluate_main", "rebuild a run's report, or evaluate a saved model"),
    "teacher-finetune": ("findistill.cli", "teacher_finetune_main", "LoRA fine-tune the teacher on gold labels"),
    "candidates": ("findistill.cli", "candidates_main", "compare teacher and student candidates on the dev split"),
    "augment": ("findistill.cli", "augment_main", "generate and filter teacher paraphrases"),
    "export": ("findistill.deploy.export", "main", "int8 / ONNX export of a student with an accuracy/speed table"),
    "predict": ("findistill.deploy.predict", "main", "classify texts from a file or stdin into JSONL"),
    "serve": ("findistill.deploy.serve", "main", "HTTP server with micro-batching (FastAPI + uvicorn)"),
    "analyze": ("findistill.cli", "analyze_main", "slices, entity swap, probes, calibration, report.html, model cards"),
    "config": ("findistill.cli", "config_main", "list every config key: type, default, range, help (and a config's values)"),
    "models": ("findistill.cli", "models_main", "list the offline models that ship inside PyPI packages"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: findistill <command> [args]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`findistill <command> --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from findistill.errors import FindistillError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"findistill: error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    module, func, _ = COMMANDS[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except FindistillError as err:
        print(f"findistill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("findistill: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
