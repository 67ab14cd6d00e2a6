"""Load any student variant and classify texts: the layer shared by export, predict, serve and the benchmarks.

A variant is a folder:

* ``fp32``: a plain Hugging Face sequence-classification folder (what training saves), run with torch;
* ``torch-int8``: config + tokenizer + ``quantized_state_dict.pt``, the state dict of the model after
  ``torch.ao.quantization.quantize_dynamic`` (nn.Linear, qint8); rebuilt from the config at load time;
* ``onnx`` / ``onnx-int8``: config + tokenizer + ``model.onnx`` run with onnxruntime.

Every folder written by :mod:`findistill.deploy.export` carries a marker, ``findistill_export.json``
(``{"variant", "source", "created", ...}``); a folder without one is read as ``fp32``.
Inference sorts texts by token length, pads each batch dynamically and restores the input order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from findistill.errors import ModelError, first_line
from findistill.models.inference import softmax, ensure_pad_token, predict_texts

MARKER = "findistill_export.json"
VARIANTS: tuple[str, ...] = ("fp32", "torch-int8", "onnx", "onnx-int8")
EXPORT_VARIANTS: tuple[str, ...] = VARIANTS[1:]
ONNX_FILE = "model.onnx"
CALIBRATION = "calibration.json"  # {"temperature": T, ...}, written by `findistill analyze`
QUANTIZED_STATE_DICT = "quantized_state_dict.pt"
DEFAULT_MAX_LENGTH = 128
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".onnx.data", ".data")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The export marker of ``folder``, or None for a plain Hugging Face folder."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable export marker ({err})") from None
    if not isinstance(marker, dict) or marker.get("variant") not in EXPORT_VARIANTS:
        raise ModelError(f"{path}: 'variant' must be one of {', '.join(EXPORT_VARIANTS)}")
    return marker


def detect_variant(folder: str | Path) -> str:
    """``fp32``, ``torch-int8``, ``onnx`` or ``onnx-int8``; ModelError when ``folder`` is none of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder not found: {folder}")
    marker = read_marker(folder)
    if marker is not None:
        return str(marker["variant"])
    if not (folder / "config.json").is_file():
        found = [v for v in EXPORT_VARIANTS if (folder / v / MARKER).is_file()]
        if found:
            raise ModelError(f"{folder} is an export folder; pass one of its variants: "
                             + ", ".join(str(folder / v) for v in found))
        raise ModelError(f"{folder}: not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelError(f"{folder}: no model weights (*.safetensors or pytorch_model.bin)")
    return "fp32"


def weights_size_mb(folder: str | Path) -> float:
    """Size of the weight files of a variant folder in MB (tokenizer and config excluded)."""
    total = sum(p.stat().st_size for p in Path(folder).iterdir()
                if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    return total / 1e6


def read_temperature(folder: Path) -> float:
    """The temperature of ``calibration.json`` in ``folder`` (fitted on the dev split by `findistill analyze`);
    1.0 when there is none."""
    path = Path(folder) / CALIBRATION
    if not path.is_file():
        return 1.0
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["temperature"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelError(f"{path}: unreadable calibration ({first_line(err, with_type=True)})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ModelError(f"{path}: temperature must be a positive number, got {value!r}")
    return float(value)


def _findistill_max_length(folder: Path) -> int | None:
    """``student.max_length`` of the resolved run config saved next to the model, when there is one."""
    path = next((folder / n for n in ("findistill_config.yaml", "config.yaml") if (folder / n).is_file()), None)
    if path is None:
        return None
    try:
        import yaml

        value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("student", {}).get("max_length")
    except Exception:  # noqa: BLE001 - best effort only
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - any loader failure is a bad folder
        raise ModelError(f"{folder}: cannot load the tokenizer ({first_line(err, with_type=True)})") from None
    ensure_pad_token(tok, owner=str(folder))
    return tok


def _load_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{folder}: cannot read config.json ({first_line(err, with_type=True)})") from None


class Classifier:
    """A loaded variant: ``predict_proba(texts) -> [N, C]``, ``labels`` and ``classify(texts)``.

    ``forward`` runs one batch. ``parallel``, when given, is ``(forward, workers)``: a thread-safe forward used when a
    call has several batches, ``workers`` of them at once (set it to None for one batch after another).
    """

    def __init__(self, folder: Path, variant: str, tokenizer, config, forward: Callable[[dict], np.ndarray],
                 input_names: Sequence[str], max_length: int, name: str, marker: dict[str, Any] | None = None,
                 parallel: tuple[Callable[[dict], np.ndarray], int] | None = None):
        self.folder = folder
        self.variant = variant
        self.tokenizer = tokenizer
        self.config = config
        self._forward = forward
        self.parallel = parallel
        self.input_names = list(input_names)
        self.max_length = max_length
        self.name = name
        self.marker = marker or {}
        self.temperature = read_temperature(folder)
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if sorted(id2label) != list(range(len(id2label))) or not id2label:
            raise ModelError(f"{folder}: config.json id2label must map 0..C-1 to names, got {config.id2label}")
        self.labels: list[str] = [id2label[i] for i in range(len(id2label))]

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, variant={self.variant!r}, labels={self.labels})"

    def predict_logits(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Raw class logits ``[N, C]`` float32, in input order."""
        run, workers = self._forward, 1
        if self.parallel is not None and len(texts) > batch_size:
            run, workers = self.parallel

        def forward(batch: Any) -> np.ndarray:
            ids = np.asarray(batch["input_ids"], dtype=np.int64)
            # an input the tokenizer does not give (e.g. token_type_ids) is a single segment: zeros
            return run({name: np.asarray(batch[name], dtype=np.int64) if name in batch
                        else np.zeros_like(ids) for name in self.input_names})

        return predict_texts(self.tokenizer, texts, self.max_length, batch_size, len(self.labels), forward,
                             progress=progress, desc=self.name, workers=workers)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Class probabilities ``[N, C]`` (columns in ``labels`` order), in input order: ``softmax(logits / T)``
        with the folder's calibrated temperature (1 without ``calibration.json``)."""
        return softmax(self.predict_logits(texts, batch_size, progress), self.temperature)

    def to_predictions(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Rows of probabilities → ``[{"label", "probs": {label: p}}]``."""
        rows = []
        for row in np.asarray(probs, dtype=np.float64):
            rows.append({"label": self.labels[int(row.argmax())],
                         "probs": {name: round(float(p), 6) for name, p in zip(self.labels, row)}})
        return rows

    def classify(self, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
        return self.to_predictions(self.predict_proba(texts, batch_size))


def _torch_forward(model) -> Callable[[dict], np.ndarray]:
    import torch

    def forward(feed: dict) -> np.ndarray:
        with torch.inference_mode():
            logits = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
        return logits.float().numpy()

    return forward


def _model_input_names(model, tokenizer) -> list[str]:
    """The tokenizer's inputs that the model's forward accepts (input_ids, attention_mask, token_type_ids?)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    names = [n for n in tokenizer.model_input_names if n in params]
    for required in ("input_ids", "attention_mask"):
        if required not in names and required in params:
            names.insert(0 if required == "input_ids" else len(names), required)
    return names


def load_torch_fp32(folder: Path, tokenizer: Any):
    """The fp32 Hugging Face sequence classifier of ``folder`` in eval mode (its config's pad id: ``tokenizer``'s
    when unset)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{folder}: cannot load a sequence classifier ({first_line(err, with_type=True)})") \
            from None
    ensure_pad_token(tokenizer, model, owner=str(folder))
    return model.eval()


def quantize_torch(model):
    """Dynamic int8 quantization of every nn.Linear (weights qint8, activations quantized on the fly)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8).eval()


def _load_torch_int8(folder: Path, config):
    import warnings

    import torch
    from transformers import AutoModelForSequenceClassification

    path = folder / QUANTIZED_STATE_DICT
    if not path.is_file():
        raise ModelError(f"{folder}: {QUANTIZED_STATE_DICT} is missing")
    try:
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).eval()
        model = quantize_torch(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{path}: cannot load the int8 weights ({first_line(err, with_type=True)})") \
            from None
    return model


def _onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{path}: onnxruntime cannot load it ({first_line(err, with_type=True)})") from None


def load_classifier(model_dir: str | Path, max_length: int | None = None, threads: int | None = None) -> Classifier:
    """Load a student variant folder (fp32, torch-int8, onnx or onnx-int8; detected) as a :class:`Classifier`.

    ``max_length`` defaults to the export marker's, else the ``student.max_length`` of the run config saved next
    to the model (``findistill_config.yaml``), else 128. ``threads`` (default: all cores) is what an onnx variant
    uses: a call that fits in one batch runs on a session with that many intra-op threads (batch-1 latency); a call
    of several batches runs that many batches at once, each on one core of a second, single-threaded session
    (made on first use), which gave more texts/s over a file than intra-op threads on 2 cores (README, Deployment).
    """
    folder = Path(model_dir)
    variant = detect_variant(folder)
    marker, parallel = read_marker(folder), None
    tokenizer = _load_tokenizer(folder)
    config = _load_config(folder)
    if max_length is None:
        max_length = (marker or {}).get("max_length") or _findistill_max_length(folder) or DEFAULT_MAX_LENGTH
    source = Path((marker or {}).get("source") or folder.resolve()).name
    name = source if variant == "fp32" else f"{source}/{variant}"
    if variant == "fp32":
        model = load_torch_fp32(folder, tokenizer)
        forward, inputs = _torch_forward(model), _model_input_names(model, tokenizer)
    elif variant == "torch-int8":
        model = _load_torch_int8(folder, config)
        forward, inputs = _torch_forward(model), _model_input_names(model, tokenizer)
    else:
        path = folder / ONNX_FILE
        if not path.is_file():
            raise ModelError(f"{folder}: {ONNX_FILE} is missing")
        threads = threads or os.cpu_count() or 1
        forward = _OnnxForward(path, threads)
        inputs = [i.name for i in forward.session.get_inputs()]  # made now: a bad file fails at load
        if threads > 1:
            parallel = (_OnnxForward(path, 1), threads)
    return Classifier(folder, variant, tokenizer, config, forward, inputs, int(max_length), name, marker, parallel)


class _OnnxForward:
    """``feed -> logits`` on ``model.onnx`` with ``threads`` intra-op threads. The session is made on first use;
    calls may come from several threads (onnxruntime allows concurrent ``run`` calls and releases the GIL in them)."""

    def __init__(self, path: Path, threads: int):
        import threading

        self.path, self.threads = path, threads
        self._session = self._output = None
        self._lock = threading.Lock()

    @property
    def session(self):
        if self._session is None:  # the lock only while it is being made, not on every batch
            with self._lock:
                if self._session is None:
                    session = _onnx_session(self.path, self.threads)
                    self._output = session.get_outputs()[0].name
                    self._session = session
        return self._session

    def __call__(self, feed: dict) -> np.ndarray:
        session = self.session
        return np.asarray(session.run([self._output], feed)[0], dtype=np.float32)
