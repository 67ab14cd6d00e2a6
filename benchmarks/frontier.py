"""The distillation frontier: accuracy against throughput for students of several sizes, CE-only vs distilled.

    python benchmarks/frontier.py                                  # every cell of the grid, resumable
    taskset -c 1 python benchmarks/frontier.py --sizes 2 --variants ce   # any number of workers, e.g. one per core
    python benchmarks/frontier.py --timing                         # onnx-int8 speed per size (idle machine!)
    python benchmarks/frontier.py --report                         # rebuild results.json / report.md / plot
    python benchmarks/frontier.py --sizes 6 --variants ce --learning-rate 8e-5   # CE-only at a rate of its own

One teacher (``teacher`` in the config, fine-tuned on gold labels and selected on the dev split) labels the
training split, the evaluation split and the transfer corpus (``data.transfer_files``) once; its logits live in the
run folder (``--run-dir``, default ``runs/frontier``). Then every **cell** — a student size (``student.num_layers``),
a variant and a seed — trains one student, selected on the dev split by the rule of ``train.selection``, and
scores it on the evaluation split. Variants:

* ``ce``: gold labels only (cross-entropy);
* ``kd``: ``alpha·T²·KL + (1−alpha)·CE`` on the gold training texts;
* ``kd_transfer``: ``kd`` plus the transfer texts, which get the KD term only;
* ``ce_matched``: ``ce`` trained for as many optimizer steps as ``kd_transfer`` (more epochs over the gold
  texts), so that "more steps" and "the teacher's knowledge" are told apart; a training length of the CE-only
  kind, so dev may choose it as the CE-only row;
* ``kd_transfer_oof``: ``kd_transfer`` whose training-row soft labels come from cross-fitted teachers that did not
  see the row (needs ``teacher.finetune.cross_fit_folds``).

A finished cell writes ``<run-dir>/cells/<cell>/cell.json`` last and is never re-run, so an interrupted benchmark
resumes cell by cell and can be built up over several invocations. Several workers may run at once (one per core
is the fastest layout on a small CPU): each claims a cell (``<cell>/claim``, holding its pid) before training it and
skips cells a live worker holds; the teacher is prepared by one worker while the others wait.
``--report`` merges whatever cells exist: per row the mean ± sd over seeds, each
seed's accuracy with its bootstrap CI, and per seed the paired bootstrap and McNemar test of each variant against
the CE-only row of its size that dev chose (SELECTION_RULE: ``ce``, ``ce_matched`` or either with ``_lr<LR>`` from
``--learning-rate``: a recipe's learning rate and length may suit KD and not CE, so CE-only gets its own grid;
``--label-smoothing`` and ``--temperature`` give rows of their own the same way); a gain is called a gain only when the
paired CI is above zero on every seed. ``--timing`` exports the first
seed's ``kd_transfer`` student of each size to onnx-int8 and measures texts/s over the evaluation texts (the
classifier ``findistill predict`` uses, model load excluded, batch 64, length-sorted) and batch-1 latency.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_machine import data_dir as tfns_data_dir, parse_overrides  # noqa: E402
from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "configs" / "frontier.yaml"
VARIANTS = ("ce", "kd", "kd_transfer", "ce_matched", "kd_transfer_oof")
# The two kinds that dev chooses a row of (SELECTION_RULE): CE-only at any training length, and distilled
KIND = {"ce": "ce", "ce_matched": "ce", "kd": "distilled", "kd_transfer": "distilled", "kd_transfer_oof": "distilled"}
TEACHER_VARIANTS = {variant for variant, kind in KIND.items() if kind == "distilled"}
TRANSFER_VARIANTS = {"kd_transfer", "kd_transfer_oof", "ce_matched"}  # their length follows --transfer-epochs
SEEDS = (42, 43, 44)
TARGETS = {"l6_accuracy": 0.89, "l6_macro_f1": 0.86, "l2_accuracy": 0.88, "l2_macro_f1": 0.84, "gain_points": 1.5,
           "compact_accuracy": 0.87, "compact_texts_per_s": 1000.0, "int8_loss_points": 0.5, "teacher_accuracy": 0.905}
SELECTION_RULE = ("Each size's CE-only row and its distilled row are chosen the same way: among the rows of a kind "
                  "(CE-only rows, over the gold texts' epochs or for as many steps as a distilled student "
                  "(`ce_matched`); distilled rows, KD with or without transfer texts; any learning rate, label "
                  "smoothing or temperature), the one with the best dev macro-F1 on the grid seed "
                  f"({SEEDS[0]}; one seed per grid point, then more seeds at the chosen setting, which cannot change "
                  "the choice). The validation split chooses nothing; the targets and gains below are stated for "
                  "these dev-chosen rows.")
PUBLISHED = [  # published TFNS validation results, for orientation (not re-measured here); each with its source
    {"model": "FinGPT v3.3 (LLaMA-2-13B, LoRA)", "params": "13B", "accuracy": 0.903, "macro_f1": 0.879,
     "source": "AI4Finance-Foundation/FinGPT fingpt/FinGPT_Sentiment_Analysis_v3/benchmark/benchmarks_llama2_13b.ipynb "
               "(commit 3069797), TFNS cell: Acc 0.9033, F1 macro 0.8788 on 2,388 texts"},
    {"model": "FinBERT-tone fine-tuned on TFNS", "params": "110M", "accuracy": 0.884, "macro_f1": None,
     "source": "huggingface.co/nickmuchi/finbert-tone-finetuned-fintwitter-classification (model card: accuracy "
               "0.8840, F1 0.8838 with its averaging not stated)"},
    {"model": "twitter-roberta-base-sentiment fine-tuned", "params": "125M", "accuracy": 0.888, "macro_f1": None,
     "source": "huggingface.co/arwisyah/fine-tuned-cardiffnlp-twitter-roberta-base-sentiment-finance-dataset "
               "(epoch 4 of its training log; the card's headline is 0.856; trained on a mirror of TFNS)"},
]


@dataclasses.dataclass(frozen=True)
class Cell:
    size: int
    variant: str
    seed: int
    transfer_epochs: float = 1.0
    learning_rate: float | None = None  # None: the config's train.learning_rate
    label_smoothing: float | None = None  # None: the config's train.label_smoothing
    temperature: float | None = None  # None: the config's train.temperature (distilled variants only)

    @property
    def label(self) -> str:
        """The variant, with ``_te<E>`` when it runs E != 1 epochs over gold + transfer texts, ``_lr<LR>`` when it
        trains at another learning rate than the config's, ``_ls<EPS>`` with another label smoothing and ``_T<T>``
        (distilled variants) with another temperature: each a row of its own."""
        return label_of(self.variant, self.transfer_epochs, self.learning_rate, self.label_smoothing, self.temperature)

    @property
    def name(self) -> str:
        return f"L{self.size}_{self.label}_s{self.seed}"


def label_of(variant: str, transfer_epochs: float, learning_rate: float | None = None,
             label_smoothing: float | None = None, temperature: float | None = None) -> str:
    label = f"{variant}_te{transfer_epochs:g}" if variant in TRANSFER_VARIANTS and transfer_epochs != 1 else variant
    label += "" if learning_rate is None else f"_lr{learning_rate:g}"
    label += "" if label_smoothing is None else f"_ls{label_smoothing:g}"
    return label + ("" if temperature is None or variant not in TEACHER_VARIANTS else f"_T{temperature:g}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/frontier.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark run config (default: %(default)s)")
    p.add_argument("--sizes", default="6,3,2", help="student sizes: transformer layers kept (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help=f"seeds per cell, from {SEEDS} (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="variants to train (default: %(default)s)")
    p.add_argument("--transfer-epochs", type=float, default=1.0,
                   help="epochs of the kd_transfer cells over gold + transfer texts (default: %(default)s); "
                        "ce_matched follows their step count; cells with E != 1 are rows of their own (_teE)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="train this invocation's cells at this rate instead of the config's train.learning_rate "
                        "(rows of their own, _lrLR); the gains are taken against the CE-only row of each size with "
                        "the best dev score")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="train this invocation's cells with this label smoothing of the CE term instead of the "
                        "config's train.label_smoothing (rows of their own, _lsEPS)")
    p.add_argument("--temperature", type=float, default=None,
                   help="train this invocation's distilled cells at this KD temperature instead of the config's "
                        "train.temperature (rows of their own, _TT; CE-only cells have no temperature)")
    p.add_argument("--timing", action="store_true", help="measure onnx-int8 speed per size (needs idle cores)")
    p.add_argument("--report", action="store_true", help="only rebuild the report from the finished cells")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>, git-ignored)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<config name>)")
    p.add_argument("--data-dir", default=None, help="TFNS folder (default: $FINDISTILL_DATA_DIR or ../shared/data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (value parsed as YAML; repeatable)")
    args = p.parse_args(argv)
    try:
        args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes takes integers like 6,3,2")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not 1 <= args.seeds <= len(SEEDS):
        p.error(f"--seeds must be in 1..{len(SEEDS)}")
    return args


def grid(sizes: list[int], variants: list[str], seeds: int, transfer_epochs: float = 1.0,
         learning_rate: float | None = None, label_smoothing: float | None = None,
         temperature: float | None = None) -> list[Cell]:
    """Seed-major order: a partial run leaves whole seeds of every size, not all seeds of one size."""
    return [Cell(size, variant, seed, transfer_epochs, learning_rate, label_smoothing,
                 temperature if variant in TEACHER_VARIANTS else None)
            for seed in SEEDS[:seeds] for size in sizes for variant in variants]


# --------------------------------------------------------------------------------------------- workers


def claim(path: Path) -> bool:
    """Take ``path`` for this process: True when it was free or its holder is dead, False when a live worker has it."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(path.read_text() or 0)
                os.kill(holder, 0)
                return holder == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # a dead worker's claim
                continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def prepare_teacher_once(run) -> None:
    """:func:`prepare_teacher` in one worker; the others wait for it."""
    lock = run.out / "teacher.claim"
    while not claim(lock):
        time.sleep(30)
    try:
        prepare_teacher(run)
    finally:
        lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- teacher


def prepare_teacher(run) -> None:
    """Fine-tune (and cross-fit) the teacher, score it on the evaluation split, label training and transfer texts."""
    run.stage_teacher_finetune()
    run.stage_teacher_eval()
    run.stage_label()
    run.release_teacher_model()


def steps_for(n_texts: int, train_cfg, epochs: float) -> int:
    """Optimizer steps of ``epochs`` epochs over ``n_texts`` (one process, the Trainer's arithmetic)."""
    per_epoch = -(-n_texts // (train_cfg.batch_size * train_cfg.gradient_accumulation_steps))
    return int(np.ceil(per_epoch * epochs))


def cell_data(run, cell: Cell) -> tuple[list[str], list[int], np.ndarray | None, int]:
    """(texts, labels, teacher logits or None, max_steps or -1) of a cell; transfer cells run its transfer epochs."""
    splits, train_cfg, transfer_epochs = run.splits, run.config.train, cell.transfer_epochs
    train = splits.train
    transfer = splits.transfer if splits.transfer is not None else None
    if cell.variant in ("kd_transfer", "kd_transfer_oof", "ce_matched") and not (transfer and len(transfer)):
        raise SystemExit(f"frontier: {cell.name} needs transfer texts (data.transfer_files)")
    if cell.variant == "ce":
        return list(train.texts), list(train.labels), None, -1
    if cell.variant == "ce_matched":
        return list(train.texts), list(train.labels), None, steps_for(len(train) + len(transfer), train_cfg,
                                                                      transfer_epochs)
    if cell.variant == "kd_transfer_oof":
        if not run.config.teacher.finetune.cross_fit_folds:
            raise SystemExit(f"frontier: {cell.name} needs teacher.finetune.cross_fit_folds >= 2")
        train_logits = run.train_teacher_logits()
    else:
        train_logits = run.teacher_logits(train)
    texts, labels, logits = list(train.texts), list(train.labels), [train_logits]
    if cell.variant == "kd":
        return texts, labels, logits[0].astype(np.float32), -1
    texts += transfer.texts
    labels += [-1] * len(transfer)
    logits.append(run.teacher_logits(transfer))
    return texts, labels, np.concatenate(logits).astype(np.float32), steps_for(len(texts), train_cfg, transfer_epochs)


def run_cell(run, cell: Cell, folder: Path) -> dict[str, Any]:
    from findistill.evaluation.metrics import predict_logits
    from findistill.io import atomic_write_json
    from findistill.models.student import save_student
    from findistill.training.trainer import train_student

    config = run.config
    texts, labels, logits, max_steps = cell_data(run, cell)
    student_cfg = dataclasses.replace(config.student, num_layers=cell.size)
    train_cfg = dataclasses.replace(config.train, seed=cell.seed, max_steps=max_steps,
                                    learning_rate=cell.learning_rate or config.train.learning_rate,
                                    label_smoothing=config.train.label_smoothing if cell.label_smoothing is None
                                    else cell.label_smoothing,
                                    temperature=cell.temperature or config.train.temperature)
    dev, ev = run.splits.dev, run.splits.eval
    print(f"[frontier] {cell.name}: {len(texts)} texts, {'CE only' if logits is None else 'KD + CE'}"
          + (f", {max_steps} steps" if max_steps > 0 else ""), flush=True)
    result = train_student(student_cfg, train_cfg, texts, labels, logits, folder / ".train", dev=(dev.texts, dev.labels))
    start = time.perf_counter()
    eval_logits = predict_logits(result.model, result.tokenizer, ev.texts, batch_size=config.train.eval_batch_size,
                                 max_length=config.student.max_length, desc=f"eval {cell.name}")
    eval_s = time.perf_counter() - start
    np.save(folder / "eval_logits.npy", eval_logits)
    if (held := run.splits.holdout) is not None:  # held-out transfer texts: fidelity per source (data.transfer_holdout)
        np.save(folder / "holdout_logits.npy", predict_logits(
            result.model, result.tokenizer, held.texts, batch_size=config.train.eval_batch_size,
            max_length=config.student.max_length, desc=f"held-out {cell.name}"))
    if cell.seed == SEEDS[0]:  # one model per size and variant is kept, for export and timing
        save_student(result.model, result.tokenizer, folder / "student")
    info = {"cell": cell.name, "size": cell.size, "variant": cell.variant, "label": cell.label, "seed": cell.seed,
            "transfer_epochs": cell.transfer_epochs if cell.variant in TRANSFER_VARIANTS else None,
            "learning_rate": cell.learning_rate, "trained_learning_rate": train_cfg.learning_rate,
            "label_smoothing": cell.label_smoothing, "temperature": cell.temperature,
            "trained_label_smoothing": train_cfg.label_smoothing, "trained_temperature": train_cfg.temperature,
            "train_examples": len(texts), "train_steps": result.steps, "selected_step": result.selected_step,
            "selected_dev_metric": result.selected_dev_metric, "train_wall_time_s": round(result.wall_time_s, 1),
            "params": result.total_params, "eval_examples_per_s_fp32": round(len(ev) / eval_s, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info()}
    atomic_write_json(folder / "training_log.json", result.log_history)
    atomic_write_json(folder / "cell.json", info)  # written last: the cell is finished
    return info


# --------------------------------------------------------------------------------------------- timing


def time_size(run, size: int, cells_dir: Path, out_dir: Path) -> dict[str, Any] | None:
    """onnx-int8 export of the first seed's distilled student with the best dev score (else CE-only), timed here."""
    from findistill.deploy.export import export
    from findistill.deploy.runtime import load_classifier

    kept = [json.loads(p.read_text()) for p in cells_dir.glob(f"L{size}_*_s{SEEDS[0]}/cell.json")
            if (p.parent / "student" / "config.json").is_file()]
    kept.sort(key=lambda c: (c["variant"] in TEACHER_VARIANTS, c["selected_dev_metric"] or 0.0), reverse=True)
    if not kept:
        return None
    source, variant = cells_dir / kept[0]["cell"] / "student", cell_label(kept[0])
    ev = run.splits.eval
    export_dir = out_dir / f"L{size}"
    report = export(source, export_dir, eval_texts=ev.texts, eval_labels=ev.labels,
                    max_length=run.config.student.max_length, variants=["onnx-int8"])
    clf = load_classifier(export_dir / "onnx-int8")  # load excluded from every timing below
    # the same file on the classifier's own intra-op session, batches one after another (how predict ran before it
    # ran several batches at once); the two are timed in turn, so a slow spell of the machine hits both
    intra_op = copy.copy(clf)
    intra_op.parallel = None
    for warm in (clf, intra_op):
        warm.predict_proba(ev.texts, batch_size=64)
    file_runs, intra_op_runs = [], []
    for _ in range(3):
        for runs, timed in ((file_runs, clf), (intra_op_runs, intra_op)):
            start = time.perf_counter()
            timed.predict_proba(ev.texts, batch_size=64)
            runs.append(time.perf_counter() - start)
    latencies = []
    for text in ev.texts[:300]:
        start = time.perf_counter()
        clf.predict_proba([text], batch_size=1)
        latencies.append((time.perf_counter() - start) * 1000)
    fp32, int8 = report["variants"]["fp32"], report["variants"]["onnx-int8"]
    return {"size": size, "source": str(source), "variant": variant, "n_texts": len(ev),
            "texts_per_s": round(len(ev) / min(file_runs), 1), "file_seconds": [round(s, 3) for s in file_runs],
            "texts_per_s_intra_op_only": round(len(ev) / min(intra_op_runs), 1),
            "file_seconds_intra_op_only": [round(s, 3) for s in intra_op_runs],
            "batch1_p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "batch1_p95_ms": round(float(np.percentile(latencies, 95)), 2),
            "fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"],
            "int8_loss_points": round((fp32["accuracy"] - int8["accuracy"]) * 100, 3),
            "int8_size_mb": int8["size_mb"], "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info()}


# --------------------------------------------------------------------------------------------- report


def cell_label(info: dict[str, Any]) -> str:
    """A finished cell's row label; cells written before transfer epochs were recorded ran one."""
    return label_of(info["variant"], info.get("transfer_epochs") or 1.0, info.get("learning_rate"),
                    info.get("label_smoothing"), info.get("temperature"))


def _label_order(info: dict[str, Any]) -> tuple[int, float, float, float, float]:
    return (VARIANTS.index(info["variant"]), info.get("transfer_epochs") or 1.0, info.get("learning_rate") or 0.0,
            info.get("label_smoothing") or 0.0, info.get("temperature") or 0.0)


def paired(y: np.ndarray, a: dict[str, Any], b: dict[str, Any], ev_cfg) -> dict[str, Any]:
    """Cell ``a`` against cell ``b`` (same seed) on the evaluation split: paired bootstrap and exact McNemar."""
    from findistill.evaluation.metrics import mcnemar_exact, paired_bootstrap

    pa, pb = a["logits"].argmax(1), b["logits"].argmax(1)
    comp = paired_bootstrap(y, pa, pb, "accuracy", ev_cfg.bootstrap_samples, ev_cfg.confidence, ev_cfg.seed)
    return {"size": a["size"], "a": a["label"], "b": b["label"], "seed": a["seed"], "diff": comp["diff"],
            "ci": comp["ci"], "mcnemar_p": mcnemar_exact(y, pa, pb)["mcnemar_p"]}


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return float(np.mean(values)), (float(statistics.stdev(values)) if len(values) > 1 else None)


def teacher_finetune_summary(run) -> dict[str, Any] | None:
    """The teacher's fine-tune as dev saw it: per epoch dev accuracy / macro-F1, the epoch dev picked, wall time."""
    from findistill.training.teacher_finetune import SUMMARY_FILE

    path = run.out / "teacher" / SUMMARY_FILE
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    return {k: s.get(k) for k in ("model", "epochs", "learning_rate", "batch_size", "parameters", "dev_before",
                                  "history", "best_epoch", "best", "train_wall_time_s", "selection")}


def row_fidelity(run, cells_dir: Path, groups: dict, ev_cfg) -> list[dict[str, Any]]:
    """Per row and transfer source, over the row's seeds: agreement with the teacher on the held-out transfer texts
    (mean and per-seed bootstrap CIs) and the mean KL (issue 25); empty without held-out texts."""
    from findistill.evaluation.metrics import fidelity

    held = run.splits.holdout
    if held is None:
        return []
    teacher = run.teacher_logits(held)
    out = []
    for (size, label), members in sorted(groups.items(), key=lambda kv: (-kv[0][0], _label_order(kv[1][0]))):
        per_seed = {m["seed"]: np.load(cells_dir / m["cell"] / "holdout_logits.npy") for m in members
                    if (cells_dir / m["cell"] / "holdout_logits.npy").is_file()}
        if not per_seed:
            continue
        fid = fidelity(held.sources, teacher, {str(seed): (label, logits) for seed, logits in per_seed.items()}, ev_cfg)
        for source, entry in fid["sources"].items():
            seeds = entry["models"]
            out.append({"size": size, "variant": label, "source": source, "n": entry["n"],
                        "teacher_labels": entry["teacher_labels"], "seeds": sorted(map(int, seeds)),
                        "agreement_mean": float(np.mean([m["agreement"] for m in seeds.values()])),
                        "agreement_ci": {seed: m["agreement_ci"] for seed, m in seeds.items()},
                        "mean_kl": float(np.mean([m["mean_kl"] for m in seeds.values()]))})
    return out


def grid_score(members: list[dict[str, Any]]) -> float:
    """A row's score in the learning-rate grid (SELECTION_RULE): the dev macro-F1 of its grid-seed cell, or the mean
    over its seeds where the grid seed is missing."""
    grid_seed = [m["selected_dev_metric"] or 0.0 for m in members if m["seed"] == SEEDS[0]]
    return grid_seed[0] if grid_seed else float(np.mean([m["selected_dev_metric"] or 0.0 for m in members]))


def build_report(run, cells_dir: Path, timing: dict[str, Any], command: str) -> dict[str, Any]:
    from findistill.evaluation.metrics import evaluate_row, majority_row
    from findistill.evaluation.prediction import Prediction

    config, ev_cfg = run.config, run.config.eval
    y = np.asarray(run.splits.eval.labels)
    cells = {}
    for path in sorted(cells_dir.glob("*/cell.json")):
        info = json.loads(path.read_text())
        info["label"] = cell_label(info)
        info["logits"] = np.load(path.parent / "eval_logits.npy")
        cells[info["cell"]] = info
    rows: list[dict[str, Any]] = [majority_row(y, np.asarray(run.splits.train.labels), ev_cfg)]
    teacher_path = run.prediction_path("teacher")
    if teacher_path.is_file():
        t = Prediction.load(teacher_path)
        rows.append(evaluate_row(t.name, "teacher", y, t.logits, ev_cfg, **t.meta))
    groups: dict[tuple[int, str], list[dict]] = {}
    for info in cells.values():
        groups.setdefault((info["size"], info["label"]), []).append(info)
    dev_choice: dict[int, dict[str, str]] = {}  # per size, the dev-chosen CE-only and distilled rows (SELECTION_RULE)
    ce_labels: dict[int, list[str]] = {}  # per size, its CE-only rows, the one dev chose (grid_score) first
    for (size, label), members in sorted(groups.items(), key=lambda kv: -grid_score(kv[1])):
        dev_choice.setdefault(size, {}).setdefault(KIND[members[0]["variant"]], label)
        if KIND[members[0]["variant"]] == "ce":
            ce_labels.setdefault(size, []).append(label)

    def same_seed(size: int, label: str, seed: int) -> dict[str, Any] | None:
        return next((c for c in groups.get((size, label), []) if c["seed"] == seed), None)

    frontier_rows, comparisons, controls = [], [], []
    for (size, variant), members in sorted(groups.items(), key=lambda kv: (-kv[0][0], _label_order(kv[1][0]))):
        members.sort(key=lambda m: m["seed"])
        per_seed = []
        for m in members:
            row = evaluate_row(m["cell"], variant, y, m["logits"], ev_cfg)
            per_seed.append({"seed": m["seed"], "accuracy": row["accuracy"], "accuracy_ci": row["accuracy_ci"],
                             "macro_f1": row["macro_f1"], "macro_f1_ci": row["macro_f1_ci"],
                             "train_steps": m["train_steps"], "selected_step": m["selected_step"],
                             "train_wall_time_s": m["train_wall_time_s"], "train_examples": m["train_examples"]})
            base = same_seed(size, ce_labels[size][0], m["seed"]) if size in ce_labels else None
            if KIND[m["variant"]] == "distilled" and base is not None:
                comparisons.append(paired(y, m, base, ev_cfg))
            others = []
            if variant == dev_choice.get(size, {}).get("distilled"):  # the CE-only rows dev did not pick, same seed
                others += [o for label in ce_labels.get(size, [])[1:] if (o := same_seed(size, label, m["seed"]))]
            if m["variant"] in ("kd_transfer", "kd_transfer_oof"):  # the controls of a transfer student
                epochs = m.get("transfer_epochs") or 1.0
                # CE-only at the same steps, at every learning rate it ran (the tuned CE-only row's rate among them)
                others += [c for c in cells.values() if c["variant"] == "ce_matched" and c["size"] == size
                           and c["seed"] == m["seed"] and (c.get("transfer_epochs") or 1.0) == epochs
                           and c is not base]
                kin = [Cell(size, "kd", m["seed"])]
                if m["variant"] == "kd_transfer_oof":  # out-of-fold against in-fold labels, same steps
                    kin.append(Cell(size, "kd_transfer", m["seed"], epochs))
                others += [cells[c.name] for c in kin if c.name in cells]
            for other in {o["cell"]: o for o in others}.values():  # each control once
                controls.append(paired(y, m, other, ev_cfg))
        acc_mean, acc_sd = _mean_sd([s["accuracy"] for s in per_seed])
        f1_mean, f1_sd = _mean_sd([s["macro_f1"] for s in per_seed])
        speed = timing.get(str(size)) if variant == (timing.get(str(size)) or {}).get("variant") else None
        frontier_rows.append({"size": size, "variant": variant, "params": members[0]["params"],
                              "seeds": [s["seed"] for s in per_seed], "accuracy_mean": acc_mean,
                              "accuracy_sd": acc_sd, "macro_f1_mean": f1_mean, "macro_f1_sd": f1_sd,
                              "per_seed": per_seed, "timing": speed})
    fidelity_rows = row_fidelity(run, cells_dir, groups, ev_cfg)
    verdicts = []
    for size in sorted({c["size"] for c in comparisons}, reverse=True):
        for variant in dict.fromkeys(c["a"] for c in comparisons if c["size"] == size):
            comps = [c for c in comparisons if c["size"] == size and c["a"] == variant]
            if comps:
                diffs = [c["diff"] * 100 for c in comps]
                verdicts.append({"size": size, "variant": variant, "seeds": [c["seed"] for c in comps],
                                 "mean_gain_points": float(np.mean(diffs)), "min_gain_points": float(min(diffs)),
                                 "gain_on_every_seed": all(c["ci"][0] > 0 for c in comps),
                                 "meets_target": all(c["ci"][0] > 0 for c in comps) and len(comps) >= 3
                                 and min(diffs) >= TARGETS["gain_points"]})
    return {"name": config.name, "command": command, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info(), "dataset": run.splits.info(), "confidence": ev_cfg.confidence,
            "reference_rows": rows, "teacher_finetune": teacher_finetune_summary(run), "frontier": frontier_rows,
            "fidelity": fidelity_rows, "comparisons": comparisons, "gains": verdicts,
            "ce_baselines": {str(size): labels[0] for size, labels in ce_labels.items()},
            "dev_choice": {str(size): choice for size, choice in dev_choice.items()}, "selection_rule": SELECTION_RULE,
            "grid": [{"size": size, "row": label, "variant": members[0]["variant"], "kind": KIND[members[0]["variant"]],
                      "learning_rate": members[0].get("trained_learning_rate"), "seeds": sorted(m["seed"] for m in members),
                      "dev_macro_f1_mean": float(np.mean([m["selected_dev_metric"] or 0.0 for m in members])),
                      "dev_macro_f1_grid_seed": grid_score(members),
                      "chosen": label in (dev_choice.get(size) or {}).values()}
                     for (size, label), members in sorted(groups.items(), key=lambda kv: (
                         -kv[0][0], kv[1][0]["variant"], kv[1][0].get("trained_learning_rate") or 0))],
            "controls": controls, "teacher_folds": run.teacher_fold_summaries(),
            "timing": timing, "targets": TARGETS, "published": PUBLISHED,
            "cells_wall_time_s": round(sum(c["train_wall_time_s"] for c in cells.values()), 1),
            "cell_torch_threads": sorted({c["machine"]["torch_threads"] for c in cells.values()})}


def _pm(mean: float, sd: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def provisional(status: str, seeds: int) -> str:
    """A verdict on fewer seeds than the targets ask for (3) says so."""
    return status if seeds >= len(SEEDS) else f"provisional ({status} on {seeds} seed{'s' * (seeds > 1)} of {len(SEEDS)})"


def check_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, each met / missed / provisional (fewer than 3 seeds) / not measured, with the value behind
    the verdict."""
    rows = {(r["size"], r["variant"]): r for r in results["frontier"]}
    out = []

    def add(name: str, status: str, value: str) -> None:
        out.append({"target": name, "status": status, "value": value})

    teacher = next((r for r in results["reference_rows"] if r["role"] == "teacher"), None)
    add(f"teacher accuracy >= {TARGETS['teacher_accuracy']:.3f}",
        "not measured" if teacher is None else ("met" if teacher["accuracy"] >= TARGETS["teacher_accuracy"] else
                                                "missed"), "—" if teacher is None else f"{teacher['accuracy']:.4f}")
    chosen = results.get("dev_choice") or {}
    for size in (6, 2):
        label = (chosen.get(str(size)) or {}).get("distilled")
        row = rows.get((size, label))
        acc, f1 = TARGETS[f"l{size}_accuracy"], TARGETS[f"l{size}_macro_f1"]
        add(f"distilled L{size} (dev-chosen) accuracy >= {acc:.2f} and macro-F1 >= {f1:.2f}",
            "not measured" if row is None else provisional(
                "met" if row["accuracy_mean"] >= acc and row["macro_f1_mean"] >= f1 else "missed", len(row["seeds"])),
            "—" if row is None else f"{label}: {row['accuracy_mean']:.4f} / {row['macro_f1_mean']:.4f} "
                                    f"({len(row['seeds'])} seed{'s' * (len(row['seeds']) > 1)})")
    for size in (6, 3, 2):
        label = (chosen.get(str(size)) or {}).get("distilled")
        gain = next((g for g in results["gains"] if g["size"] == size and g["variant"] == label), None)
        add(f"L{size}: dev-chosen distilled − dev-chosen CE-only >= +{TARGETS['gain_points']} points, paired CI > 0 "
            "on each of 3 seeds", "not measured" if gain is None else provisional(
                "met" if gain["gain_on_every_seed"] and gain.get("min_gain_points", -1.0) >= TARGETS["gain_points"]
                else "missed", len(gain["seeds"])),
            "—" if gain is None else f"{gain['variant']} vs {(chosen.get(str(size)) or {}).get('ce')}: mean "
            f"{gain['mean_gain_points']:+.2f} points over seeds {gain['seeds']} (smallest seed "
            f"{gain.get('min_gain_points', float('nan')):+.2f}; each seed must reach +{TARGETS['gain_points']}), "
            f"CI > 0 on every seed: {gain['gain_on_every_seed']}")
    compact = [(r, r["timing"]) for r in results["frontier"] if r["size"] in (2, 3) and r["timing"]]
    ok = [(r, t) for r, t in compact if r["accuracy_mean"] >= TARGETS["compact_accuracy"]
          and t["texts_per_s"] >= TARGETS["compact_texts_per_s"] and t["int8_loss_points"] <= TARGETS["int8_loss_points"]]
    add(f"compact student (L3 or L2) >= {TARGETS['compact_accuracy']:.2f} accuracy at >= "
        f"{TARGETS['compact_texts_per_s']:,.0f} texts/s onnx-int8, <= {TARGETS['int8_loss_points']} points int8 loss",
        "not measured" if not compact else provisional("met" if ok else "missed",
                                                       max(len(r["seeds"]) for r, _ in (ok or compact))),
        "; ".join(f"L{r['size']} {r['variant']}: {r['accuracy_mean']:.4f}, {t['texts_per_s']:,.0f} texts/s, "
                  f"int8 loss {t['int8_loss_points']:+.2f}" for r, t in compact) or "—")
    return out


def teacher_candidates(path: Path) -> dict[str, Any] | None:
    """The teacher-candidate table (``benchmarks/teacher_candidates.py``'s results.json), best dev macro-F1 first, for
    the report; None when that benchmark has not run."""
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    rows = [{"name": c["name"], "dev_macro_f1": c["dev"]["macro_f1"], "accuracy": c["validation"]["accuracy"],
             "accuracy_ci": c["validation"]["accuracy_ci"], "macro_f1": c["validation"]["macro_f1"]}
            for c in sorted(found["candidates"].values(), key=lambda c: -c["dev"]["macro_f1"])]
    return {"source": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
            "chosen": found["chosen"], "rule": found["rule"], "rows": rows}


def commands_so_far(previous: Path, command: str) -> list[str]:
    """Every command that made this report's cells and timings, in order: those recorded in ``previous`` (the last
    results.json; an older one recorded only its last ``command``) and ``command``, each once."""
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    done = list(old.get("commands") or ([old["command"]] if old.get("command") else []))
    return done + ([command] if command not in done else [])


def render(results: dict[str, Any], config_yaml: str) -> str:
    from findistill.evaluation.report import human_params

    m, d = results["machine"], results["dataset"]
    lines = [f"# Distillation frontier ({results['name']})", "",
             "- Commands (every invocation that made this report, in order):",
             *[f"  - `{c}`" for c in results.get("commands") or [results["command"]]],
             f"- Report built: {results['created']} (by the last command)",
             f"- Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
             f"transformers {m['transformers']}",
             f"- Evaluation: {d.get('name')} `{d.get('split')}`, n = {d.get('n'):,}; train {d.get('n_train'):,}, "
             f"dev {d.get('n_dev'):,} (selection), transfer {d.get('n_transfer', 0):,} texts "
             f"({json.dumps(d.get('transfer', {}))})",
             f"- Student training wall time, all cells: {results['cells_wall_time_s'] / 60:.1f} min "
             f"(torch threads per cell: {results['cell_torch_threads']}; each cell's own time is in results.json; "
             "cells that ran beside other work are no speed measurement — speed is the timing columns only)", "", "## Targets", "", "| target | value | status |",
             "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | **{t['status']}** |" for t in results["target_status"]]
    if results.get("selection_rule"):
        lines += ["", f"Selection rule: {results['selection_rule']}"]
    if results.get("grid"):
        lines += ["", "## Learning rates and every row's dev score (what chose)", "",
                  "| size | row | variant | learning rate | seeds | dev macro-F1, grid seed | mean over seeds | chosen |",
                  "|---|---|---|---:|---|---:|---:|---|"]
        lines += [f"| L{g['size']} | {g['row']} | {g['variant']} | {g['learning_rate'] if g['learning_rate'] is not None else '—'} | "
                  f"{', '.join(map(str, g['seeds']))} | {g.get('dev_macro_f1_grid_seed', g['dev_macro_f1_mean']):.4f} | "
                  f"{g['dev_macro_f1_mean']:.4f} | {'**yes**' if g['chosen'] else ''} |"
                  for g in results["grid"]]
    level = f"{results['confidence']:.0%}"
    lines += ["", "## Teacher and majority class", "", f"| model | role | accuracy [{level} CI] | macro-F1 |",
              "|---|---|---:|---:|"]
    for r in results["reference_rows"]:
        lo, hi = r["accuracy_ci"]
        lines.append(f"| {r['name']} | {r['role']} | {r['accuracy']:.4f} [{lo:.4f}, {hi:.4f}] | {r['macro_f1']:.4f} |")
    if ft := results.get("teacher_finetune"):
        lines += ["", f"The teacher: {ft['model']} fine-tuned ({ft['parameters']}) for {ft['epochs']:g} epochs at lr "
                  f"{ft['learning_rate']:g}, batch {ft['batch_size']}, in {(ft['train_wall_time_s'] or 0) / 60:.0f} min; "
                  f"dev picked epoch {ft['best_epoch']} ({ft['selection']}).", "",
                  "| epoch | dev accuracy | dev macro-F1 |", "|---:|---:|---:|"]
        lines += [f"| {h['epoch']:g} | {h['accuracy']:.4f} | {h['macro_f1']:.4f} |" for h in ft.get("history") or []]
    if tc := results.get("teacher_candidates"):
        lines += ["", "## Teacher candidates (`benchmarks/teacher_candidates.py`)", "",
                  f"Rule: {tc['rule']}. Chosen: **{tc['chosen'] or '—'}**. Full table and commands: "
                  f"`{tc['source']}`.", "", "| candidate | dev macro-F1 | validation accuracy [CI] | validation macro-F1 |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {c['name']} | {c['dev_macro_f1']:.4f} | {c['accuracy']:.4f} [{c['accuracy_ci'][0]:.4f}, "
                  f"{c['accuracy_ci'][1]:.4f}] | {c['macro_f1']:.4f} |" for c in tc["rows"]]
    if results.get("teacher_folds"):
        lines += ["", "## Cross-fitted teachers (dev split)", "", "Each labels the training rows it did not see "
                  "(`kd_transfer_oof`); the teacher above, fine-tuned on every training row, labels the rest.", "",
                  "| teacher | training texts | selected epoch | dev accuracy | dev macro-F1 |",
                  "|---|---:|---:|---:|---:|"]
        for f in results["teacher_folds"]:
            best = f["best"] or {}
            lines.append(f"| {f['fold']} | {f['train_examples']:,} | {f['best_epoch']} | "
                         + " | ".join(f"{best[k]:.4f}" if k in best else "—" for k in ("accuracy", "macro_f1")) + " |")
    lines += ["", "## Students", "", "Mean ± sd over seeds; per seed: accuracy [bootstrap CI] (optimizer steps, "
              "selected step).", "", "| size | variant | params | seeds | accuracy | macro-F1 | per seed | "
              "onnx-int8 texts/s | batch-1 p50 (ms) | int8 − fp32 (points) |",
              "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results["frontier"]:
        seeds = "<br>".join(f"s{s['seed']}: {s['accuracy']:.4f} [{s['accuracy_ci'][0]:.4f}, {s['accuracy_ci'][1]:.4f}]"
                            f" ({s['train_steps']} steps, sel. {s['selected_step']})" for s in r["per_seed"])
        t = r["timing"] or {}
        lines.append(f"| L{r['size']} | {r['variant']} | {human_params(r['params'])} | {len(r['seeds'])} | "
                     f"{_pm(r['accuracy_mean'], r['accuracy_sd'])} | {_pm(r['macro_f1_mean'], r['macro_f1_sd'])} | "
                     f"{seeds} | {t.get('texts_per_s', '—')} | {t.get('batch1_p50_ms', '—')} | "
                     f"{-t['int8_loss_points'] if t else '—'} |")
    lines += ["", "## Gains over CE-only, per seed (paired, accuracy points)", "",
              "Against the CE-only row that dev chose for each size (the selection rule above; validation never "
              "picks it): "
              + ", ".join(f"L{size} `{label}`" for size, label in sorted(results.get("ce_baselines", {}).items(),
                                                                        key=lambda kv: -int(kv[0]))) + ".", "",
              f"| size | variant | seed | gain [{level} CI] | McNemar p |", "|---|---|---:|---:|---:|"]
    for c in results["comparisons"]:
        lines.append(f"| L{c['size']} | {c['a']} | {c['seed']} | {c['diff'] * 100:+.2f} "
                     f"[{c['ci'][0] * 100:+.2f}, {c['ci'][1] * 100:+.2f}] | {c['mcnemar_p']:.3g} |")
    lines += ["", "| size | variant | seeds | mean gain | CI above zero on every seed |", "|---|---|---|---:|---|"]
    for g in results["gains"]:
        lines.append(f"| L{g['size']} | {g['variant']} | {g['seeds']} | {g['mean_gain_points']:+.2f} | "
                     f"{'yes' if g['gain_on_every_seed'] else 'no'} |")
    if results.get("controls"):
        lines += ["", "## Controls of the distilled students, per seed (paired, accuracy points)", "",
                  "Against CE-only trained for the same number of steps (is it more steps?), against KD on the gold "
                  "texts alone (is it the transfer texts?), for out-of-fold labels against in-fold labels at the "
                  "same steps (`kd_transfer_oof` vs `kd_transfer`), and, for the distilled row dev chose, against "
                  "the CE-only rows dev did not pick (e.g. CE-only at the distilled student's learning rate).", "",
                  f"| size | student | against | seed | difference [{level} CI] | McNemar p |",
                  "|---|---|---|---:|---:|---:|"]
        for c in results["controls"]:
            lines.append(f"| L{c['size']} | {c['a']} | {c['b']} | {c['seed']} | {c['diff'] * 100:+.2f} "
                         f"[{c['ci'][0] * 100:+.2f}, {c['ci'][1] * 100:+.2f}] | {c['mcnemar_p']:.3g} |")
    if results.get("fidelity"):
        lines += ["", "## Fidelity per transfer source (held-out texts, no labels)", "",
                  "Agreement with the teacher's class on each source's held-out slice (mean over seeds; each seed's "
                  "bootstrap CI in results.json) and the mean KL from teacher to student.", "",
                  "| size | student | source | held out | agreement (mean over seeds) | mean KL |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| L{f['size']} | {f['variant']} | {f['source']} | {f['n']:,} | {f['agreement_mean']:.4f} | "
                  f"{f['mean_kl']:.4f} |" for f in results["fidelity"]]
    timed = [t for _, t in sorted(results["timing"].items())]
    if timed:
        lines += ["", "## Speed (onnx-int8, `findistill predict`'s classifier, all validation tweets, load excluded)",
                  "", "Best of 3 runs each, the two ways timed in turn. Several batches at once: what `predict` does "
                  "(one batch per core). One session, intra-op threads: one onnxruntime session with as many "
                  "intra-op threads as cores, batches one after another.", "",
                  "| size | student | measured | several batches at once (texts/s) | one session, intra-op threads "
                  "(texts/s) | batch-1 p50 / p95 (ms) |", "|---|---|---|---:|---:|---:|"]
        for t in timed:
            lines.append(f"| L{t['size']} | {t['variant']} | {t['measured']} | {t['texts_per_s']} | "
                         f"{t.get('texts_per_s_intra_op_only', 'not measured')} | "
                         f"{t['batch1_p50_ms']} / {t['batch1_p95_ms']} |")
    lines += ["", "## Published TFNS results (validation split; for orientation, not re-measured)", "",
              "| model | params | accuracy | macro-F1 | source |", "|---|---:|---:|---:|---|"]
    for p in results["published"]:
        lines.append(f"| {p['model']} | {p['params']} | {p['accuracy']:.3f} | "
                     f"{'—' if p['macro_f1'] is None else format(p['macro_f1'], '.3f')} | {p.get('source', '—')} |")
    if results.get("plot"):
        lines += ["", f"![accuracy against onnx-int8 throughput]({Path(results['plot']).name})"]
    lines += ["", "## Config", "", "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    """Accuracy (mean over seeds, sd as error bar) against onnx-int8 texts/s; False when nothing was timed."""
    points = [r for r in results["frontier"] if r["timing"]]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in points:
        ax.errorbar(r["timing"]["texts_per_s"], r["accuracy_mean"], yerr=r["accuracy_sd"] or 0, fmt="o", capsize=3)
        ax.annotate(f"L{r['size']} {r['variant']}", (r["timing"]["texts_per_s"], r["accuracy_mean"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    for r in results["reference_rows"]:
        ax.axhline(r["accuracy"], ls="--", lw=0.8, color="grey")
        ax.text(ax.get_xlim()[0], r["accuracy"], f" {r['role']}: {r['name']}", fontsize=7, va="bottom")
    ax.set_xlabel("onnx-int8 texts/s (2,388 validation tweets, batch 64, load excluded)")
    ax.set_ylabel("TFNS validation accuracy")
    ax.set_title("Distilled students: accuracy against throughput")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def open_run(args: argparse.Namespace, script: str, argv: list[str]):
    """(config, Run, results folder, cells folder, the command line) of a cell benchmark invocation: the config with
    its ``--set`` overrides, the run folder (``--run-dir``, default ``runs/<config name>``) and the results folder
    (``--out``, default ``benchmarks/results/<config name>``)."""
    from findistill.config import load_config
    from findistill.pipeline import Run

    config = load_config(args.config, parse_overrides(args.overrides))
    run_dir = Path(args.run_dir or REPO / "runs" / config.name)
    out = Path(args.out or REPO / "benchmarks" / "results" / config.name)
    command = f"python benchmarks/{script}" + "".join(" " + shlex.quote(a) for a in argv)
    return config, Run(config, run_dir, tfns_data_dir(args.data_dir)), out, run_dir / "cells", command


def main(argv: list[str] | None = None) -> int:
    from findistill.errors import FindistillError

    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except FindistillError as err:
        print(f"frontier: error: {err}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    import logging

    from findistill.config import dump_config
    from findistill.io import atomic_write_json, atomic_write_text

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config, run, out, cells_dir, command = open_run(args, "frontier.py", argv)
    run_dir = run.out
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if args.timing:
        for size in args.size_list:
            measured = time_size(run, size, cells_dir, run_dir / "exports")
            if measured is not None:
                measured["command"] = command
                timing[str(size)] = measured
                atomic_write_json(timing_path, timing)
                print(f"[frontier] L{size}: {measured['texts_per_s']} texts/s onnx-int8, batch-1 p50 "
                      f"{measured['batch1_p50_ms']} ms", flush=True)
    elif not args.report:
        cells = grid(args.size_list, args.variant_list, args.seeds, args.transfer_epochs, args.learning_rate,
                     args.label_smoothing, args.temperature)
        if any(c.variant in TEACHER_VARIANTS for c in cells):
            prepare_teacher_once(run)
        started = time.perf_counter()
        for cell in cells:
            folder = cells_dir / cell.name
            if (folder / "cell.json").is_file() or not claim(folder / "claim"):
                continue
            info = run_cell(run, cell, folder)
            (folder / "claim").unlink(missing_ok=True)
            print(f"[frontier] {cell.name} done in {info['train_wall_time_s'] / 60:.1f} min "
                  f"({(time.perf_counter() - started) / 60:.1f} min this invocation)", flush=True)
    results = build_report(run, cells_dir, timing, command)
    results["commands"] = commands_so_far(out / "results.json", command)
    results["target_status"] = check_targets(results)
    results["teacher_candidates"] = teacher_candidates(REPO / "benchmarks" / "results" / "teacher_candidates" /
                                                       "results.json")
    results["plot"] = str(out / "frontier.png") if plot(results, out / "frontier.png") else ""
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results, dump_config(config)))
    for log in sorted(cells_dir.glob("*/training_log.json")):  # each finished cell's loss and dev curve
        if (log.parent / "cell.json").is_file():
            atomic_write_text(out / "training_logs" / f"{log.parent.name}.json", log.read_text())
    print(f"\nfrontier report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
