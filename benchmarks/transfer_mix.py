"""Which unlabelled text should a student see? Transfer mixes of the same size, judged on dev and on per-style fidelity.

    python benchmarks/transfer_mix.py                                   # every cell, resumable; one worker per core:
    taskset -c 1 python benchmarks/transfer_mix.py --sizes 2 --seeds 1  #   cells are claimed, never run twice
    python benchmarks/transfer_mix.py --report                          # rebuild results.json / report.md

One teacher (``teacher`` in the config) labels the union of every transfer source once (``data.transfer_files``,
uncapped, each source with a held-out slice, ``data.transfer_holdout``): the run folder's label stage and cache. Each
**mix** draws its transfer texts from that union, by source, ``--total`` texts in every mix (equal shares; a source
short of its share gives the rest to the others), seeded; the texts keep the logits the teacher gave them, so no mix
labels anything. ``all_uncapped`` takes every union text. A **cell** (student size, mix, seed) trains the student on
gold + its mix (KD on the transfer rows only, the frontier recipe: ``train`` in the config, dev selection), then
predicts the evaluation split and every source's held-out slice. ``ce`` cells (gold only) are the reference.

The report gives per size and mix: TFNS accuracy / macro-F1 (mean ± sd over seeds, each seed's CI), the dev score
the cell was selected on, and per source the agreement with the teacher on its held-out slice and the mean KL. The mix
named best is the one with the best mean dev macro-F1; fidelity is shown beside it. Validation chooses nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from frontier import SEEDS, _mean_sd, claim, commands_so_far, open_run, prepare_teacher_once, steps_for  # noqa: E402

from findistill.machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "benchmarks" / "configs" / "transfer_mix.yaml"
MIXES = {  # mix -> the source names it draws from (the names of data.transfer_files); None: the whole union
    "tweets": ["tweets"],
    "tweets+headlines": ["tweets", "headlines"],
    "tweets+report_sentences": ["tweets", "report_sentences"],
    "all_three": ["tweets", "headlines", "report_sentences"],
    "all_uncapped": None,
}
REFERENCE_MIX = "tweets"  # the mix every other one is measured against
TARGET_STYLES = ("headlines", "report_sentences")  # the styles whose fidelity must rise over the tweets-only mix
TARGETS = {"size": 2, "seeds": 3, "fidelity_every_style": 0.95, "fidelity_gain_points": 3.0}


def draw_mix(sources: list[str], names: list[str] | None, total: int, seed: int) -> list[int]:
    """Indices into the union transfer split: ``total`` texts in equal shares over ``names`` (a source short of its
    share gives the rest to the others, in order), each source's texts a seeded sample; all indices when ``names``
    is None."""
    if names is None:
        return list(range(len(sources)))
    unknown = set(names) - set(sources)
    if unknown:
        raise SystemExit(f"transfer_mix: no transfer source named {sorted(unknown)} (have {sorted(set(sources))})")
    pools = {name: [i for i, s in enumerate(sources) if s == name] for name in names}
    for k, name in enumerate(names):
        order = np.random.default_rng([seed, k]).permutation(len(pools[name]))
        pools[name] = [pools[name][j] for j in order]
    want = {name: total // len(names) + (1 if k < total % len(names) else 0) for k, name in enumerate(names)}
    short = sum(max(0, want[n] - len(pools[n])) for n in names)
    for name in names:  # hand what the short sources lack to the others, in order
        spare = len(pools[name]) - want[name]
        give = min(max(0, spare), short)
        want[name] += give
        short -= give
    return sorted(i for name in names for i in pools[name][:min(want[name], len(pools[name]))])


@dataclasses.dataclass(frozen=True)
class Cell:
    size: int
    mix: str  # a MIXES key, or "ce" (gold labels only)
    seed: int

    @property
    def name(self) -> str:
        return f"L{self.size}_{self.mix}_s{self.seed}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/transfer_mix.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--sizes", default="2,6", help="student sizes (transformer layers kept; default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help=f"seeds per cell, from {SEEDS} (default: %(default)s)")
    p.add_argument("--mixes", default=",".join(["ce", *MIXES]), help="mixes to train (default: all, and ce)")
    p.add_argument("--total", type=int, default=8000, help="transfer texts in every mix (default: %(default)s)")
    p.add_argument("--report", action="store_true", help="only rebuild the report from the finished cells")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<config name>, git-ignored)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<config name>)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.mix_list = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if bad := [m for m in args.mix_list if m != "ce" and m not in MIXES]:
        p.error(f"unknown mixes {bad}; choose from ce, {', '.join(MIXES)}")
    return args


def run_cell(run, cell: Cell, total: int, folder: Path) -> dict[str, Any]:
    from findistill.evaluation.metrics import predict_logits
    from findistill.io import atomic_write_json
    from findistill.training.trainer import train_student

    config, splits = run.config, run.splits
    texts, labels, logits, steps = list(splits.train.texts), list(splits.train.labels), None, -1
    if cell.mix != "ce":
        union = splits.transfer
        chosen = draw_mix(union.sources, MIXES[cell.mix], total, config.data.seed)
        union_logits = run.teacher_logits(union)
        texts += [union.texts[i] for i in chosen]
        labels += [-1] * len(chosen)
        logits = np.concatenate([run.teacher_logits(splits.train), union_logits[chosen]]).astype(np.float32)
        steps = steps_for(len(texts), config.train, config.train.epochs)
    student_cfg = dataclasses.replace(config.student, num_layers=cell.size)
    train_cfg = dataclasses.replace(config.train, seed=cell.seed, max_steps=steps)
    dev = splits.dev
    print(f"[transfer_mix] {cell.name}: {len(texts)} texts", flush=True)
    result = train_student(student_cfg, train_cfg, texts, labels, logits, folder / ".train", dev=(dev.texts, dev.labels))
    for name, split in (("eval", splits.eval), ("holdout", splits.holdout)):
        if split is not None:
            np.save(folder / f"{name}_logits.npy", predict_logits(
                result.model, result.tokenizer, split.texts, batch_size=config.train.eval_batch_size,
                max_length=config.student.max_length, desc=f"{name} {cell.name}"))
    info = {"cell": cell.name, "size": cell.size, "mix": cell.mix, "seed": cell.seed,
            "transfer_texts": len(texts) - len(splits.train), "train_steps": result.steps,
            "selected_step": result.selected_step, "selected_dev_metric": result.selected_dev_metric,
            "train_wall_time_s": round(result.wall_time_s, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info()}
    atomic_write_json(folder / "cell.json", info)  # written last: the cell is finished
    return info


def build_report(run, cells_dir: Path, commands: list[str]) -> dict[str, Any]:
    from findistill.evaluation.metrics import evaluate_row, fidelity

    splits, ev_cfg = run.splits, run.config.eval
    y = np.asarray(splits.eval.labels)
    held = splits.holdout
    teacher_held = run.teacher_logits(held) if held is not None else None
    groups: dict[tuple[int, str], list[dict]] = {}
    for path in sorted(cells_dir.glob("*/cell.json")):
        info = json.loads(path.read_text())
        groups.setdefault((info["size"], info["mix"]), []).append(info)
    rows = []
    for (size, mix), members in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1] != "ce", kv[0][1])):
        per_seed, fid = [], {}
        for m in sorted(members, key=lambda m: m["seed"]):
            row = evaluate_row(m["cell"], mix, y, np.load(cells_dir / m["cell"] / "eval_logits.npy"), ev_cfg)
            per_seed.append({"seed": m["seed"], "accuracy": row["accuracy"], "accuracy_ci": row["accuracy_ci"],
                             "macro_f1": row["macro_f1"], "dev_macro_f1": m["selected_dev_metric"],
                             "transfer_texts": m["transfer_texts"], "train_steps": m["train_steps"],
                             "train_wall_time_s": m["train_wall_time_s"]})
            if held is not None and (cells_dir / m["cell"] / "holdout_logits.npy").is_file():
                f = fidelity(held.sources, teacher_held, {"s": (mix, np.load(cells_dir / m["cell"] / "holdout_logits.npy"))},
                             ev_cfg)
                for source, entry in f["sources"].items():
                    fid.setdefault(source, []).append(entry["models"]["s"])
        acc, acc_sd = _mean_sd([s["accuracy"] for s in per_seed])
        f1, f1_sd = _mean_sd([s["macro_f1"] for s in per_seed])
        rows.append({"size": size, "mix": mix, "seeds": [s["seed"] for s in per_seed], "accuracy_mean": acc,
                     "accuracy_sd": acc_sd, "macro_f1_mean": f1, "macro_f1_sd": f1_sd,
                     "dev_macro_f1_mean": float(np.mean([s["dev_macro_f1"] or 0.0 for s in per_seed])),
                     "per_seed": per_seed,
                     "fidelity": {source: {"agreement_mean": float(np.mean([m["agreement"] for m in ms])),
                                           "mean_kl": float(np.mean([m["mean_kl"] for m in ms])),
                                           "agreement_ci": [m["agreement_ci"] for m in ms]}
                                  for source, ms in fid.items()}})
    best = {}
    for size in sorted({r["size"] for r in rows}, reverse=True):
        mixes = [r for r in rows if r["size"] == size and r["mix"] != "ce"]
        if mixes:
            best[str(size)] = max(mixes, key=lambda r: r["dev_macro_f1_mean"])["mix"]
    compare_to_reference(rows)
    teacher_labels = {}
    if held is not None:
        for source, entry in fidelity(held.sources, teacher_held, {}, ev_cfg)["sources"].items():
            teacher_labels[source] = entry["teacher_labels"]
    teacher_path = run.prediction_path("teacher")
    teacher = None
    if teacher_path.is_file():
        from findistill.evaluation.prediction import Prediction

        t = Prediction.load(teacher_path)
        teacher = evaluate_row(t.name, "teacher", y, t.logits, ev_cfg)
    return {"name": run.config.name, "commands": commands, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info(), "dataset": splits.info(), "teacher": teacher,
            "holdout_sources": sorted(set(held.sources)) if held is not None else [], "rows": rows,
            "teacher_labels": teacher_labels, "reference_mix": REFERENCE_MIX,
            "best_on_dev": best, "rule": "per size, the mix with the best mean dev macro-F1; validation chooses nothing"}


def compare_to_reference(rows: list[dict[str, Any]]) -> None:
    """Adds ``vs_reference`` to every row but the tweets-only one: by how many points its dev macro-F1, TFNS accuracy and
    agreement on each style differ from the tweets-only mix of the same size."""
    for r in rows:
        ref = next((x for x in rows if x["size"] == r["size"] and x["mix"] == REFERENCE_MIX), None)
        if ref is not None and r is not ref and r["mix"] != "ce":
            r["vs_reference"] = {
                "dev_points": 100 * (r["dev_macro_f1_mean"] - ref["dev_macro_f1_mean"]),
                "accuracy_points": 100 * (r["accuracy_mean"] - ref["accuracy_mean"]),
                "fidelity_points": {s: 100 * (f["agreement_mean"] - ref["fidelity"][s]["agreement_mean"])
                                    for s, f in r["fidelity"].items() if s in ref["fidelity"]}}


def check_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 25's targets for the dev-best mix of the 2-layer student (3-seed means): met / missed / provisional (fewer
    seeds than asked) / not measured, each with the values behind it."""
    size = TARGETS["size"]
    rows = {r["mix"]: r for r in results["rows"] if r["size"] == size}
    best, ref = rows.get(results["best_on_dev"].get(str(size), "")), rows.get(REFERENCE_MIX)
    out = []

    def add(target: str, ok: bool | None, value: str, seeds: int) -> None:
        status = "not measured" if ok is None else ("met" if ok else "missed")
        if ok is not None and seeds < TARGETS["seeds"]:
            status = f"provisional ({status} on {seeds} seed{'s' * (seeds > 1)} of {TARGETS['seeds']})"
        out.append({"target": target, "status": status, "value": value})

    floor = TARGETS["fidelity_every_style"]
    if best is None or not best["fidelity"]:
        add(f"L{size} best mix: fidelity >= {floor} on every style", None, "—", 0)
    else:
        worst = min(best["fidelity"].items(), key=lambda kv: kv[1]["agreement_mean"])
        add(f"L{size} best mix: fidelity >= {floor} on every style", worst[1]["agreement_mean"] >= floor,
            f"`{best['mix']}`: lowest {worst[0]} {worst[1]['agreement_mean']:.3f}", len(best["seeds"]))
    gain = TARGETS["fidelity_gain_points"]
    for style in TARGET_STYLES:
        delta = ((best or {}).get("vs_reference") or {}).get("fidelity_points", {}).get(style)
        if best is not None and best["mix"] == REFERENCE_MIX:
            delta = 0.0
        add(f"L{size} best mix: fidelity on {style} >= +{gain:g} points over `{REFERENCE_MIX}`",
            None if delta is None else delta >= gain,
            "—" if delta is None else f"`{best['mix']}`: {delta:+.1f} points", len(best["seeds"]) if best else 0)
    if best is None or ref is None:
        add(f"L{size} best mix: TFNS accuracy within the `{REFERENCE_MIX}` student's CI", None, "—", 0)
    else:
        lo = float(np.mean([s["accuracy_ci"][0] for s in ref["per_seed"]]))
        add(f"L{size} best mix: TFNS accuracy within the `{REFERENCE_MIX}` student's CI (not below its lower bound)",
            best["accuracy_mean"] >= lo, f"`{best['mix']}` {best['accuracy_mean']:.4f} vs lower bound {lo:.4f}",
            min(len(best["seeds"]), len(ref["seeds"])))
    return out


def render(results: dict[str, Any]) -> str:
    sources = results["holdout_sources"]
    lines = [f"# Transfer mixes ({results['name']})", "", "- Commands (in order):",
             *[f"  - `{c}`" for c in results["commands"]], f"- Report built: {results['created']}",
             f"- Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores", ""]
    if results["teacher"]:
        t = results["teacher"]
        lines += [f"Teacher on validation: {t['accuracy']:.4f} accuracy, {t['macro_f1']:.4f} macro-F1.", ""]
    lines += [f"Best mix on dev ({results['rule']}): "
              + ", ".join(f"L{size} `{mix}`" for size, mix in results["best_on_dev"].items()), "",
              "| size | mix | seeds | dev macro-F1 | accuracy | macro-F1 | "
              + " | ".join(f"agreement {s} (KL)" for s in sources) + " |",
              "|---|---|---:|---:|---:|---:|" + "---:|" * len(sources)]
    for r in results["rows"]:
        sd = f" ± {r['accuracy_sd']:.3f}" if r["accuracy_sd"] is not None else ""
        fid = [f"{r['fidelity'][s]['agreement_mean']:.3f} ({r['fidelity'][s]['mean_kl']:.3f})"
               if s in r["fidelity"] else "—" for s in sources]
        lines.append(f"| L{r['size']} | {r['mix']} | {len(r['seeds'])} | {r['dev_macro_f1_mean']:.4f} | "
                     f"{r['accuracy_mean']:.4f}{sd} | {r['macro_f1_mean']:.4f} | " + " | ".join(fid) + " |")
    deltas = [r for r in results["rows"] if r.get("vs_reference")]
    if deltas:
        ref = results.get("reference_mix", REFERENCE_MIX)
        lines += ["", f"## Against the `{ref}` mix of the same size (points; means over each row's seeds)", "",
                  "| size | mix | dev macro-F1 | TFNS accuracy | " + " | ".join(f"agreement {s}" for s in sources) + " |",
                  "|---|---|---:|---:|" + "---:|" * len(sources)]
        for r in deltas:
            d = r["vs_reference"]
            lines.append(f"| L{r['size']} | {r['mix']} | {d['dev_points']:+.1f} | {d['accuracy_points']:+.1f} | "
                         + " | ".join(f"{d['fidelity_points'][s]:+.1f}" if s in d["fidelity_points"] else "—"
                                      for s in sources) + " |")
    if results.get("teacher_labels"):
        lines += ["", "## The teacher's classes on each held-out slice", "", "| source | " + " | ".join(
            next(iter(results["teacher_labels"].values()))) + " |", "|---|---:|---:|---:|"]
        for source, counts in results["teacher_labels"].items():
            n = sum(counts.values()) or 1
            lines.append(f"| {source} | " + " | ".join(f"{c} ({c / n:.0%})" for c in counts.values()) + " |")
    if results.get("target_status"):
        lines += ["", "## Targets (issue 25)", "", "| target | value | status |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | **{t['status']}** |" for t in results["target_status"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import logging

    from findistill.io import atomic_write_json, atomic_write_text

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config, run, out, cells_dir, command = open_run(args, "transfer_mix.py", argv)
    if not args.report:
        prepare_teacher_once(run)  # one worker fine-tunes and labels the union, the others wait
        for seed in SEEDS[: args.seeds]:
            for size in args.size_list:
                for mix in args.mix_list:
                    cell = Cell(size, mix, seed)
                    folder = cells_dir / cell.name
                    if (folder / "cell.json").is_file() or not claim(folder / "claim"):
                        continue
                    info = run_cell(run, cell, args.total, folder)
                    (folder / "claim").unlink(missing_ok=True)
                    print(f"[transfer_mix] {cell.name} done in {info['train_wall_time_s'] / 60:.1f} min", flush=True)
    results = build_report(run, cells_dir, commands_so_far(out / "results.json", command))
    results["target_status"] = check_targets(results)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results))
    print(f"\ntransfer mix report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
