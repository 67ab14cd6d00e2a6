"""``findistill export``: int8 and ONNX variants of a saved student, checked, with an accuracy/speed table.

``export(model_dir, out_dir)`` writes, in one atomic rename (a failed export leaves ``out_dir`` as it was):

* ``torch-int8/``: ``torch.ao.quantization.quantize_dynamic`` (nn.Linear, qint8 weights, dynamic activations);
  its state dict (packed int8 weights) is saved as ``quantized_state_dict.pt`` and reloaded into a model built
  from ``config.json`` and quantized the same way (same torch version expected);
* ``onnx/``: ``torch.onnx.export`` (the torch.export-based exporter; TorchScript as a fallback) with dynamic
  batch and sequence axes, inputs ``input_ids``/``attention_mask`` (+ ``token_type_ids`` when the tokenizer
  emits them), output ``logits``; onnxruntime's logits are checked against torch's before anything is kept;
* ``onnx-int8/``: ``onnxruntime.quantization.quantize_dynamic`` of that graph (QInt8 weights, per-channel scales);
* ``export_report.json`` / ``export_report.md``: per variant (fp32 included) model size, the ONNX check, and with
  evaluation data accuracy, macro-F1, agreement with fp32 and examples/s at batch 64.

Each variant folder holds the tokenizer, ``config.json`` (with id2label) and ``findistill_export.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from findistill.config import LABEL2ID, LABELS, TFNS_LABEL_MAP
from findistill.errors import DataError, ModelError, first_line
from findistill.machine import machine_info
from findistill.models.labels import NAME_THE_CLASSES, class_columns
from findistill.io import atomic_directory, atomic_write_json, atomic_write_text
from findistill.deploy.runtime import (EXPORT_VARIANTS, MARKER, ONNX_FILE, QUANTIZED_STATE_DICT, Classifier,
                                detect_variant, load_classifier, load_torch_fp32, quantize_torch, weights_size_mb)

CANONICAL_LABEL_MAP = {**{str(i): n for i, n in enumerate(LABELS)}, **{n: n for n in LABELS}}
_SAMPLE_TEXTS = [
    "$AAPL soars on strong earnings, upgraded to buy",
    "Cemex files quarterly report",
    "Tesla shares fall sharply after weak outlook and a downgrade to sell at Credit Suisse, analysts say",
    "ok",
    "Nomura to present at conference",
]
_EXTERNAL_DATA_BYTES = 1_500_000_000  # ONNX protobufs are capped at 2 GB: larger weights go to model.onnx.data


def parse_label_map(spec: str | None) -> dict[str, str]:
    """``canonical`` (default: 0/1/2 or names), ``tfns`` (0 Bearish, 1 Bullish, 2 Neutral) or ``v=class,...``."""
    if spec in (None, "", "canonical"):
        return dict(CANONICAL_LABEL_MAP)
    if spec == "tfns":
        return dict(TFNS_LABEL_MAP)
    out = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or value.strip() not in LABEL2ID:
            raise DataError(f"--label-map: expected value=class pairs with classes {', '.join(LABELS)}, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _marker(variant: str, source: Path, max_length: int, **extra: Any) -> dict[str, Any]:
    return {"variant": variant, "source": str(source.resolve()), "max_length": max_length,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, **extra}


def _support_files(model, tokenizer, source: Path, dst: Path) -> None:
    """Tokenizer, config.json (id2label), the run config, the model card and the calibration next to every variant."""
    dst.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(dst))
    model.config.save_pretrained(str(dst))
    for name in ("findistill_config.yaml", "README.md", "calibration.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, dst / name)


class _Logits2(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class _Logits3(_Logits2):
    def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[override]
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def _export_onnx(model, names: list[str], sample: dict[str, Any], path: Path) -> str:
    """Write ``path``; returns the exporter used ("dynamo" or "torchscript")."""
    wrapper = (_Logits3 if len(names) == 3 else _Logits2)(model).eval()
    args = tuple(torch.as_tensor(sample[n], dtype=torch.long) for n in names)
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > _EXTERNAL_DATA_BYTES
    dims = {n: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for n in names}
    errors = []
    for exporter in ("dynamo", "torchscript"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                                      dynamo=True, dynamic_shapes=dims, external_data=external, verbose=False)
                else:
                    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
                    torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=["logits"],
                                      dynamo=False, dynamic_axes=axes, opset_version=17)
            return exporter
        except Exception as err:  # noqa: BLE001 - try the other exporter, report both
            errors.append(f"{exporter}: {first_line(err, with_type=True)}")
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink()
    raise ModelError("ONNX export failed (" + "; ".join(errors) + ")")


def _check_close(reference: Classifier, candidate: Classifier, texts: list[str], atol: float) -> float:
    """Max |logit difference| over several batch shapes; ModelError when above ``atol``."""
    diff = 0.0
    for batch_size in (len(texts), 3, 1):
        a = reference.predict_logits(texts, batch_size=batch_size)
        b = candidate.predict_logits(texts, batch_size=batch_size)
        diff = max(diff, float(np.abs(a - b).max()))
    if not diff <= atol:
        raise ModelError(f"onnxruntime logits differ from torch by {diff:.2e} (> {atol:g}); export aborted")
    return diff


def _quantize_onnx(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = (src.parent / (src.name + ".data")).exists()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" notice
    try:
        # Per-channel weight scales: one scale per output row keeps small rows from being flattened by large
        # ones (the int8 - fp32 accuracy of each export is in its export_report.json).
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=external)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"onnx int8 quantization failed ({first_line(err, with_type=True)})") \
            from None
    finally:
        root.setLevel(level)


def _class_of_column(classifier: Classifier) -> np.ndarray:
    """Model column -> canonical class id (:func:`~findistill.models.labels.class_columns`; an unmappable model is
    refused)."""
    columns = class_columns(dict(enumerate(classifier.labels)), where=str(classifier.folder),
                           fix=NAME_THE_CLASSES)
    out = np.empty(len(classifier.labels), dtype=np.int64)
    for c, cols in enumerate(columns):
        out[cols] = c
    return out


def _evaluate(classifier: Classifier, texts: list[str], labels: list[int], batch_size: int) -> dict[str, Any]:
    from findistill.evaluation.metrics import classification_metrics

    classifier.predict_proba(texts[:batch_size], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    probs = classifier.predict_proba(texts, batch_size=batch_size)
    seconds = time.perf_counter() - start
    preds = _class_of_column(classifier)[probs.argmax(axis=1)]
    metrics = classification_metrics(labels, preds)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "predictions": preds,
            "examples_per_s": len(texts) / seconds if seconds > 0 else None}


def render_report(report: dict[str, Any]) -> str:
    lines = [f"# Export of `{report['source']}`", "", f"Created {report['created']}; max_length "
             f"{report['max_length']}; evaluation: {report.get('eval', {}).get('file') or 'none'}"
             f" ({report.get('eval', {}).get('n', 0)} examples).", "",
             "| variant | accuracy | macro-F1 | agreement with fp32 | size (MB) | examples/s (batch 64) |",
             "|---|---:|---:|---:|---:|---:|"]

    def fmt(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for name, row in report["variants"].items():
        lines.append(f"| {name} | {fmt(row.get('accuracy'), '.4f')} | {fmt(row.get('macro_f1'), '.4f')} | "
                     f"{fmt(row.get('agreement_with_fp32'), '.4f')} | {fmt(row['size_mb'], '.2f')} | "
                     f"{fmt(row.get('examples_per_s'), ',.0f')} |")
    onnx = report["variants"].get("onnx", {})
    if "max_abs_logit_diff" in onnx:
        lines += ["", f"ONNX (`{onnx.get('exporter')}` exporter) vs torch fp32: max |logit diff| "
                      f"{onnx['max_abs_logit_diff']:.2e}."]
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, onnxruntime "
                  f"{m['onnxruntime']}. torch-int8 is dynamic quantization of nn.Linear (qint8); onnx-int8 is "
                  "onnxruntime dynamic quantization (QInt8 weights)."]
    return "\n".join(lines) + "\n"


def export(model_dir: str | Path, out_dir: str | Path, eval_file: str | Path | None = None,
           eval_texts: Sequence[str] | None = None, eval_labels: Sequence[int] | None = None,
           text_column: str = "text", label_column: str = "label", label_map: dict[str, str] | None = None,
           max_length: int = 64, batch_size: int = 64, variants: Sequence[str] = EXPORT_VARIANTS,
           atol: float = 1e-3) -> dict[str, Any]:
    """Write the variants of the student in ``model_dir`` under ``out_dir``; returns the report dict.

    Evaluation data: ``eval_file`` (CSV/TSV/JSONL/parquet read by :func:`findistill.data.load_table`, labels
    mapped by ``label_map``, default canonical names or ids 0/1/2) or ``eval_texts`` + canonical ``eval_labels``.
    """
    source, out = Path(model_dir), Path(out_dir)
    unknown = [v for v in variants if v not in EXPORT_VARIANTS]
    if unknown or not variants:
        raise ModelError(f"unknown variants {unknown}; choose from {', '.join(EXPORT_VARIANTS)}")
    if "onnx-int8" in variants and "onnx" not in variants:
        variants = [*variants, "onnx"]
    if detect_variant(source) != "fp32":
        raise ModelError(f"{source}: export needs a plain student folder, not an exported variant")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ModelError(f"--out must not be the model folder or inside it: {out}")
    if out.exists() and any(out.iterdir()) and not ((out / "export_report.json").is_file()
                                                    or any((out / v / MARKER).is_file() for v in EXPORT_VARIANTS)):
        raise ModelError(f"--out {out} exists and is not a findistill export; refusing to replace it")
    if eval_file is not None:
        from findistill.data.splits import load_table

        split = load_table(eval_file, text_column, label_column, label_map or CANONICAL_LABEL_MAP, "eval")
        eval_texts, eval_labels = split.texts, split.labels
    if eval_texts is not None and (eval_labels is None or len(eval_labels) != len(eval_texts) or not eval_texts):
        raise DataError("evaluation needs as many labels as texts (and at least one text)")
    reference = load_classifier(source, max_length=max_length)
    tokenizer = reference.tokenizer
    model = load_torch_fp32(source, tokenizer)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in reference.input_names]
    check_texts = list(eval_texts[:32]) if eval_texts else list(_SAMPLE_TEXTS)
    report: dict[str, Any] = {"source": str(source.resolve()), "max_length": max_length,
                              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "machine": machine_info(),
                              "variants": {v: {} for v in ("fp32", *EXPORT_VARIANTS) if v == "fp32" or v in variants}}
    with atomic_directory(out) as tmp:
        if "torch-int8" in variants:
            dst = tmp / "torch-int8"
            _support_files(model, tokenizer, source, dst)
            torch.save(quantize_torch(copy.deepcopy(model)).state_dict(), dst / QUANTIZED_STATE_DICT)
            atomic_write_json(dst / MARKER, _marker("torch-int8", source, max_length, weights=QUANTIZED_STATE_DICT,
                                                    method="torch.ao.quantization.quantize_dynamic(nn.Linear, qint8)"))
        if "onnx" in variants:
            dst = tmp / "onnx"
            _support_files(model, tokenizer, source, dst)
            sample = tokenizer.pad({k: v for k, v in tokenizer(_SAMPLE_TEXTS[:3], truncation=True,
                                                              max_length=max_length).items()
                                    if k in ("input_ids", "attention_mask")}, return_tensors="np")
            sample = {n: sample[n] if n in sample else np.zeros_like(sample["input_ids"]) for n in names}
            exporter = _export_onnx(model, names, sample, dst / ONNX_FILE)
            atomic_write_json(dst / MARKER, _marker("onnx", source, max_length, exporter=exporter, inputs=names))
            diff = _check_close(reference, load_classifier(dst), check_texts, atol)
            report["variants"]["onnx"].update(exporter=exporter, max_abs_logit_diff=diff)
        if "onnx-int8" in variants:
            dst = tmp / "onnx-int8"
            _support_files(model, tokenizer, source, dst)
            _quantize_onnx(tmp / "onnx" / ONNX_FILE, dst / ONNX_FILE)
            atomic_write_json(dst / MARKER, _marker("onnx-int8", source, max_length, inputs=names,
                                                    method="onnxruntime.quantization.quantize_dynamic(QInt8)"))
        fp32_preds = None
        for variant in ("fp32", *[v for v in EXPORT_VARIANTS if v in variants]):
            folder = source if variant == "fp32" else tmp / variant
            row = report["variants"][variant]
            row.update(folder=str(source if variant == "fp32" else out / variant), size_mb=weights_size_mb(folder))
            if eval_texts:
                clf = reference if variant == "fp32" else load_classifier(folder)
                result = _evaluate(clf, list(eval_texts), list(eval_labels or []), batch_size)
                preds = result.pop("predictions")
                fp32_preds = preds if variant == "fp32" else fp32_preds
                row.update(result, agreement_with_fp32=float(np.mean(preds == fp32_preds)))
        if eval_texts:
            report["eval"] = {"file": str(eval_file) if eval_file else "texts given in memory", "n": len(eval_texts),
                              "batch_size": batch_size}
        atomic_write_json(tmp / "export_report.json", report)
        atomic_write_text(tmp / "export_report.md", render_report(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="findistill export", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="a saved student (plain Hugging Face folder)")
    p.add_argument("--out", required=True, help="export folder (replaced atomically)")
    p.add_argument("--eval-file", default=None, help="labelled CSV/JSONL/parquet for the accuracy/speed table")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-map", default=None,
                   help="canonical (default: names or 0/1/2), tfns (0 Bearish, 1 Bullish, 2 Neutral) or v=class,...")
    p.add_argument("--max-length", type=int, default=64, help="maximum tokens per text")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--variants", default=",".join(EXPORT_VARIANTS), help="comma-separated subset to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from findistill.errors import FindistillError

    args = build_parser().parse_args(argv)
    try:
        report = export(args.model_dir, args.out, eval_file=args.eval_file, text_column=args.text_column,
                        label_column=args.label_column, label_map=parse_label_map(args.label_map),
                        max_length=args.max_length, batch_size=args.batch_size,
                        variants=[v.strip() for v in args.variants.split(",") if v.strip()])
    except FindistillError as err:
        print(f"findistill: error: {err}", file=sys.stderr)
        return 2
    print(render_report(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
