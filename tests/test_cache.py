"""CachedTeacher: same signal as the online teacher, zero forward passes on a hit, atomic and self-healing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from findistill.cache import CachedTeacher, cache_key, load_cached
from findistill.config import TeacherConfig

TEXTS = ["$AAPL soars on strong earnings", "Tesla cut to sell at Credit Suisse", "Nomura files quarterly report"]


@pytest.fixture(scope="module")
def lm_teacher(tiny_llama_dir):
    from findistill.teacher import PromptedLMTeacher

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
    from findistill.teacher import PromptedLMTeacher

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
    from findistill.teacher import PromptedLMTeacher

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
    from findistill.teacher import PromptedLMTeacher

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
