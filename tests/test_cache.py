"""CachedTeacher: same signal as the online teacher, zero forward passes on a hit, atomic and self-healing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from findistill.teachers.cache import CachedTeacher, cache_key, load_cached
from findistill.config import TeacherConfig

TEXTS = ["$AAPL soars on strong earnings", "Tesla cut to sell at Credit Suisse", "Nomura files quarterly report"]


@pytest.fixture(scope="module")
def lm_teacher(tiny_llama_dir):
    from findistill.teachers import PromptedLMTeacher

    return PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), batch_size=2), device="cpu")


def test_second_call_runs_no_forward_pass(lm_teacher, tmp_path):
    cached = CachedTeacher(lm_teacher, tmp_path)
    start = lm_teacher.forward_passes
    first = cached.class_logits(TEXTS, progress=False)
    assert lm_teacher.forward_passes == start + 2 and (cached.hits, cached.misses) == (0, 1)
    np.testing.assert_array_equal(first, lm_teacher.class_logits(TEXTS, progress=False))
    after_first = lm_teacher.forward_passes

    again = CachedTeacher(lm_teacher, tmp_path)  # a fresh wrapper (a new process) reads the same files
    second = again.class_logits(TEXTS, progress=False)
    assert lm_teacher.forward_passes == after_first and (again.hits, again.misses) == (1, 0)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (3, 3)
    assert again.name == lm_teacher.name and again.fingerprint() == lm_teacher.fingerprint()

    key = cache_key(lm_teacher.fingerprint(), TEXTS)
    meta = __import__("json").loads((tmp_path / f"{key}.json").read_text())
    assert meta["n"] == 3 and meta["fingerprint"] == lm_teacher.fingerprint() and meta["teacher"] == lm_teacher.name
    np.testing.assert_array_equal(load_cached(tmp_path, key), first)
    # Atomic writes leave only the two entry files, no temporaries.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{key}.safetensors", f"{key}.json"])

    # Other texts, or the same texts in another order, are another entry.
    again.class_logits(TEXTS[::-1], progress=False)
    assert (again.hits, again.misses) == (1, 1)


def test_key_depends_on_prompt_and_texts(lm_teacher):
    fp = lm_teacher.fingerprint()
    other = dict(fp, prompt="Is this tweet bullish? {text}\nAnswer:")
    assert cache_key(fp, TEXTS) == cache_key(dict(fp), list(TEXTS))
    assert cache_key(fp, TEXTS) != cache_key(other, TEXTS)
    assert cache_key(fp, TEXTS) != cache_key(fp, TEXTS[::-1])
    assert cache_key(fp, TEXTS) != cache_key(fp, TEXTS[:2])


def test_different_prompt_teacher_gets_its_own_entry(lm_teacher, tiny_llama_dir, tmp_path):
    from findistill.teachers import PromptedLMTeacher

    cfg = dataclasses.replace(lm_teacher.cfg, prompt="Is this tweet good news? {text}\nAnswer:")
    other = PromptedLMTeacher(cfg, model=lm_teacher.model, tokenizer=lm_teacher.tokenizer)
    a, b = CachedTeacher(lm_teacher, tmp_path), CachedTeacher(other, tmp_path)
    a.class_logits(TEXTS, progress=False)
    b.class_logits(TEXTS, progress=False)
    assert b.misses == 1 and a.key(TEXTS) != b.key(TEXTS)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate", "delete", "wrong_shape"])
def test_damaged_entry_is_recomputed(lm_teacher, tmp_path, damage):
    from safetensors.numpy import save_file

    cached = CachedTeacher(lm_teacher, tmp_path)
    expected = cached.class_logits(TEXTS, progress=False)
    path = tmp_path / f"{cached.key(TEXTS)}.safetensors"
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "delete":
        path.unlink()
    else:
        save_file({"logits": np.zeros((2, 3), np.float32)}, str(path))
    before = lm_teacher.forward_passes
    fresh = CachedTeacher(lm_teacher, tmp_path)
    np.testing.assert_allclose(fresh.class_logits(TEXTS, progress=False), expected, atol=1e-6)
    assert fresh.misses == 1 and lm_teacher.forward_passes > before
    assert load_cached(tmp_path, fresh.key(TEXTS)) is not None  # healed
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_texts(lm_teacher, tmp_path):
    cached = CachedTeacher(lm_teacher, tmp_path)
    assert cached.class_logits([], progress=False).shape == (0, 3)
    assert not list(tmp_path.iterdir())


def test_release_keeps_cached_entries_readable(tiny_llama_dir, tmp_path):
    from findistill.errors import ModelError
    from findistill.teachers import PromptedLMTeacher

    cached = CachedTeacher(PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir)), device="cpu"), tmp_path)
    first = cached.class_logits(TEXTS, progress=False)
    cached.release()
    assert cached.teacher.model is None
    np.testing.assert_array_equal(cached.class_logits(TEXTS, progress=False), first)
    with pytest.raises(ModelError, match="released"):
        cached.class_logits(TEXTS[:1], progress=False)


class _PartlyNaNTeacher:
    """A teacher whose logits are NaN / inf for the texts that contain "BAD" (as a broken fp16 model gives)."""

    name = "nan-teacher"
    num_parameters = 0

    def __init__(self):
        self.calls = 0

    def class_logits(self, texts, progress=True):
        self.calls += 1
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for i, t in enumerate(texts):
            if "BAD" in t:
                out[i, i % 3] = np.nan if i % 2 else np.inf
        return out

    def fingerprint(self):
        return {"kind": "nan-teacher"}

    def release(self):
        pass


def test_nonfinite_teacher_logits_fail_at_labelling_naming_the_texts(tmp_path):
    from findistill.errors import ModelError

    texts = [f"fine tweet {i}" for i in range(6)] + [f"BAD tweet number {i}" for i in range(5)]
    cached = CachedTeacher(_PartlyNaNTeacher(), tmp_path)
    with pytest.raises(ModelError) as info:
        cached.class_logits(texts, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "non-finite" in msg and "5 of 11 texts" in msg
    assert "'BAD tweet number 0'" in msg and "'BAD tweet number 2'" in msg and "and 2 more" in msg
    assert "fine tweet" not in msg
    assert list(tmp_path.iterdir()) == []  # nothing cached, so a rerun asks the teacher again
    np.testing.assert_array_equal(cached.class_logits(texts[:6], progress=False), np.zeros((6, 3)))


def test_nan_weights_of_a_real_teacher_are_caught(tiny_llama_dir, tmp_path):
    """A real prompted LM whose embeddings of one text's tokens are NaN: labelling stops, naming that text."""
    import torch

    from findistill.errors import ModelError
    from findistill.teachers import PromptedLMTeacher

    teacher = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), batch_size=2), device="cpu")
    bad_text, good = TEXTS[1], [TEXTS[0], TEXTS[2]]
    poison = set(teacher.encode(bad_text)) - set().union(*(teacher.encode(t) for t in good))
    assert poison
    with torch.no_grad():
        teacher.model.get_input_embeddings().weight[sorted(poison)] = float("nan")
    cached = CachedTeacher(teacher, tmp_path)
    with pytest.raises(ModelError, match=r"1 of 3 texts: #1 'Tesla cut to sell at Credit Suisse'"):
        cached.class_logits(TEXTS, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert np.isfinite(cached.class_logits(good, progress=False)).all()


class _CountingTeacher:
    """Deterministic logits from the text; ``fail_after`` chunks, it raises (a crash mid-list)."""

    name = "counting"
    num_parameters = 7

    def __init__(self, fail_after: int | None = None):
        self.calls, self.texts, self.fail_after = 0, 0, fail_after

    def class_logits(self, texts, progress=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        self.texts += len(texts)
        return np.array([[len(t), i % 3, -1.0] for i, t in enumerate(texts)], dtype=np.float32)

    def fingerprint(self):
        return {"kind": "counting"}

    def release(self):
        pass


def test_a_crash_loses_at_most_the_chunk_in_progress(tmp_path):
    texts = [f"tweet number {i}" + "!" * (i % 5) for i in range(23)]
    crashing = CachedTeacher(_CountingTeacher(fail_after=3), tmp_path, chunk_size=5)
    with pytest.raises(RuntimeError, match="killed"):
        crashing.class_logits(texts, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3 and not list(tmp_path.glob(".*.tmp"))
    resumed_teacher = _CountingTeacher()
    resumed = CachedTeacher(resumed_teacher, tmp_path, chunk_size=5)
    logits = resumed.class_logits(texts, progress=False)
    assert (resumed.hits, resumed.misses) == (3, 2) and resumed_teacher.texts == 8  # chunks 4 (5 texts) and 5 (3)
    np.testing.assert_array_equal(logits, CachedTeacher(_CountingTeacher(), tmp_path / "fresh", 5).class_logits(texts))


def test_identity_file_lets_cached_chunks_be_read_without_loading_the_teacher(tmp_path):
    loads = []

    def load():
        loads.append(1)
        return _CountingTeacher()

    texts = [f"t{i}" for i in range(9)]
    first = CachedTeacher(load, tmp_path, chunk_size=4, identity_key="abc")
    expected = first.class_logits(texts, progress=False)
    assert loads == [1] and json.loads((tmp_path / "teacher-abc.json").read_text())["num_parameters"] == 7
    again = CachedTeacher(load, tmp_path, chunk_size=4, identity_key="abc")
    np.testing.assert_array_equal(again.class_logits(texts, progress=False), expected)
    assert loads == [1] and again.name == "counting" and again.hits == 3
    again.class_logits(["a new text"], progress=False)  # a miss loads the teacher
    assert loads == [1, 1]


def test_a_whole_list_entry_of_an_older_cache_is_read(lm_teacher, tmp_path):
    texts = TEXTS * 3
    old = CachedTeacher(lm_teacher, tmp_path, chunk_size=len(texts))  # one entry for the list, as before chunks
    expected = old.class_logits(texts, progress=False)
    before = lm_teacher.forward_passes
    chunked = CachedTeacher(lm_teacher, tmp_path, chunk_size=4)
    np.testing.assert_array_equal(chunked.class_logits(texts, progress=False), expected)
    assert lm_teacher.forward_passes == before and chunked.hits == 1


def test_fingerprint_holds_the_hub_commit_of_an_unpinned_model(lm_teacher, tmp_path):
    local = CachedTeacher(lm_teacher, tmp_path).fingerprint()
    assert "hub_commits" not in local, "a local folder has no commit: older cache entries keep their key"
    lm_teacher.model.config._commit_hash = "0123abc"
    try:
        hub = CachedTeacher(lm_teacher, tmp_path).fingerprint()
        pinned = dataclasses.replace(lm_teacher.cfg, revision="v1.0")
        original, lm_teacher.cfg = lm_teacher.cfg, pinned
        try:
            assert "hub_commits" not in CachedTeacher(lm_teacher, tmp_path).fingerprint()
        finally:
            lm_teacher.cfg = original
    finally:
        lm_teacher.model.config._commit_hash = None
    assert hub["hub_commits"] == ["0123abc"] and cache_key(hub, TEXTS) != cache_key(local, TEXTS)


def test_the_one_json_hash_keeps_the_formats_keys_were_written_in():
    """io.json_sha256 is canonical JSON by default (teacher fingerprints, cache and stage keys); the paraphrase cache
    keys pass the options they were first written with. The expected digests are of the formats spelled out here."""
    import hashlib
    import json

    from findistill.io import json_sha256

    obj = {"z": 1, "a": {"é": [1, 2.5]}, "p": None}
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert json_sha256(obj) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert json_sha256(obj, ensure_ascii=True, separators=None) == hashlib.sha256(
        json.dumps(obj, sort_keys=True).encode()).hexdigest()
    prompts = ["Café — “up”", "b"]
    assert json_sha256(prompts, sort_keys=False, separators=None) == hashlib.sha256(
        json.dumps(prompts, ensure_ascii=False).encode()).hexdigest()
