"""Prompts, verbalizer ids and the teachers (tiny random models, CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from findistill.config import TeacherConfig
from findistill.errors import ModelError
from findistill.teachers.prompts import build_prompt, select_few_shot, verbalizer_token_ids

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEXTS = [
    "$AAPL soars on strong earnings #1",
    "Tesla cut to sell at Credit Suisse after a long and very weak outlook for the quarter #2",
    "Nomura files quarterly report",
    "$XYZ",
    "Carnival shares jump to record as bookings recover strongly across every single region #5",
    "the bank announces dividend date #6",
]


@pytest.fixture(scope="module")
def llama_tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def lm_teacher(tiny_llama_dir):
    from findistill.teachers import PromptedLMTeacher

    cfg = TeacherConfig(model=str(tiny_llama_dir), batch_size=4, few_shot=2)
    return PromptedLMTeacher(cfg, few_shot=[("Apple beats estimates", 2), ("Cemex misses estimates", 0)], device="cpu")


# --------------------------------------------------------------------------------------------- prompts


def test_plain_prompt_renders_few_shot_then_query(llama_tok):
    cfg = TeacherConfig(model="x")
    prompt = build_prompt(llama_tok, cfg, "Query text", [("Ex one", 0), ("Ex two", 2)])
    assert "Tweet: Ex one\nSentiment: negative" in prompt
    assert "Tweet: Ex two\nSentiment: positive" in prompt
    assert prompt.endswith("Tweet: Query text\nSentiment:")
    assert prompt.index("Ex one") < prompt.index("Ex two") < prompt.index("Query text")


def test_chat_prompt_uses_turns_and_system(llama_tok):
    tok = llama_tok
    old = tok.chat_template
    tok.chat_template = CHAT_TEMPLATE
    try:
        cfg = TeacherConfig(model="x", system_prompt="You are an analyst.", prompt="Text: {text}\nAnswer:")
        prompt = build_prompt(tok, cfg, "Query", [("Ex one", 1)])
        assert prompt == (
            "<|system|>You are an analyst.\n<|user|>Text: Ex one\nAnswer:\n<|assistant|>neutral\n"
            "<|user|>Text: Query\nAnswer:\n<|assistant|>"
        )
        plain = build_prompt(tok, dataclasses.replace(cfg, use_chat_template=False), "Query")
        assert "<|user|>" not in plain and plain.endswith("Text: Query\nAnswer:")
    finally:
        tok.chat_template = old


def test_verbalizer_ids_and_collision(llama_tok):
    ids = verbalizer_token_ids(llama_tok, {"negative": ["negative"], "neutral": ["neutral"], "positive": ["positive"]})
    assert len(ids) == 3 and all(ids)
    flat = [i for row in ids for i in row]
    assert len(flat) == len(set(flat))
    # " neutral" is a single token of the tiny tokenizer: it is among the neutral ids.
    assert llama_tok.encode(" neutral", add_special_tokens=False)[0] in ids[1]
    # A shared first token is dropped; the class keeps its other word.
    words = {"negative": ["negative", "down"], "neutral": ["flat", "down"], "positive": ["up"]}
    shared = verbalizer_token_ids(llama_tok, words)
    down = llama_tok.encode(" down", add_special_tokens=False)[0]
    assert down not in shared[0] + shared[1] and shared[0] and shared[1]
    assert llama_tok.encode(" negative", add_special_tokens=False)[0] in shared[0]
    # A class left with nothing of its own is an error.
    with pytest.raises(ModelError, match="share the first token") as err:
        verbalizer_token_ids(llama_tok, {"negative": ["down"], "neutral": ["down"], "positive": ["up"]})
    assert "\n" not in str(err.value)


def test_select_few_shot_balanced_and_deterministic():
    texts = [f"t{i}" for i in range(30)]
    labels = [i % 3 for i in range(30)]
    a = select_few_shot(texts, labels, 6, seed=1)
    assert a == select_few_shot(texts, labels, 6, seed=1)
    assert sorted(y for _, y in a) == [0, 0, 1, 1, 2, 2]
    assert all(labels[texts.index(t)] == y for t, y in a)
    assert select_few_shot(texts, labels, 6, seed=2) != a
    assert select_few_shot(texts, [-1] * 30, 3, seed=0) == []


# --------------------------------------------------------------------------------------------- prompted LM


def test_prompted_lm_batch_size_and_order_invariant(lm_teacher):
    lm_teacher.cfg.batch_size = 4
    full = lm_teacher.class_logits(TEXTS, progress=False)
    assert full.shape == (len(TEXTS), 3) and full.dtype == np.float32 and np.isfinite(full).all()
    lm_teacher.cfg.batch_size = 1
    single = lm_teacher.class_logits(TEXTS, progress=False)
    perm = [3, 0, 5, 2, 4, 1]
    lm_teacher.cfg.batch_size = 4
    shuffled = lm_teacher.class_logits([TEXTS[i] for i in perm], progress=False)
    np.testing.assert_allclose(full, single, atol=1e-4)
    np.testing.assert_allclose(full[perm], shuffled, atol=1e-4)


def test_prompted_lm_matches_unpadded_reference(lm_teacher):
    tok, model = lm_teacher.tokenizer, lm_teacher.model
    got = lm_teacher.class_logits(TEXTS[:3], progress=False)
    for row, text in enumerate(TEXTS[:3]):
        ids = tok(lm_teacher.prompt(text), return_tensors="pt")["input_ids"]  # [1, L], no padding
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1].float()  # [V]
        logp = torch.log_softmax(last, -1)
        ref = [torch.logsumexp(logp[ids_c], -1).item() for ids_c in lm_teacher.label_token_ids]
        np.testing.assert_allclose(got[row], ref, atol=1e-4)


def test_prompted_lm_truncation_keeps_answer_cue(tiny_llama_dir):
    from findistill.teachers import PromptedLMTeacher

    teacher = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), max_length=16), device="cpu")
    ids = teacher.encode("Apple " * 100)
    full = teacher.tokenizer.encode(teacher.prompt("Apple " * 100))
    assert len(ids) == 16 and ids[-5:] == full[-5:]
    assert np.isfinite(teacher.class_logits(["Apple " * 100, "short"], progress=False)).all()


def test_prompted_lm_fingerprint_tracks_prompt(lm_teacher, tiny_llama_dir):
    fp = lm_teacher.fingerprint()
    assert fp["class"] == "PromptedLMTeacher"
    assert fp["few_shot"] == [["Apple beats estimates", 2], ["Cemex misses estimates", 0]]
    assert fp["content_digest"]
    import json

    json.dumps(fp)


# --------------------------------------------------------------------------------------------- classifier / ensemble


def test_classifier_teacher_reorders_columns(tiny_bert_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from findistill.teachers import ClassifierTeacher

    cfg = TeacherConfig(kind="classifier", model=str(tiny_bert_classifier_dir), batch_size=2,
                        label_map={"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"})
    teacher = ClassifierTeacher(cfg, device="cpu")
    got = teacher.class_logits(TEXTS, progress=False)
    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier_dir)
    raw_model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_classifier_dir).eval()
    with torch.no_grad():
        raw = torch.cat([raw_model(**tok([t], return_tensors="pt")).logits for t in TEXTS]).numpy()  # [N, 3]
    # Bearish (0) -> negative, Neutral (2) -> neutral, Bullish (1) -> positive.
    np.testing.assert_allclose(got, raw[:, [0, 2, 1]], atol=1e-4)
    assert teacher.fingerprint()["label_map"] == {"negative": [0], "neutral": [2], "positive": [1]}


def test_classifier_teacher_needs_label_map(tiny_bert_classifier_dir):
    from findistill.teachers import ClassifierTeacher

    with pytest.raises(ModelError, match="Bearish, Bullish, Neutral"):
        ClassifierTeacher(TeacherConfig(kind="classifier", model=str(tiny_bert_classifier_dir)), device="cpu")


class _FixedTeacher:
    """A stand-in member with fixed logits (the ensemble only needs the Teacher interface)."""

    def __init__(self, logits, name):
        self.logits, self.name, self.num_parameters = np.asarray(logits, np.float32), name, 10

    def class_logits(self, texts, progress=True):
        return self.logits[: len(texts)]

    def fingerprint(self):
        return {"class": "fixed", "name": self.name}


def test_ensemble_is_mean_of_probabilities():
    from findistill.teachers import EnsembleTeacher

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    ens = EnsembleTeacher([_FixedTeacher(a, "a"), _FixedTeacher(b, "b")])
    got = ens.class_logits(["x"] * 5, progress=False)
    expected = (torch.softmax(torch.tensor(a), -1) + torch.softmax(torch.tensor(b), -1)).numpy() / 2
    np.testing.assert_allclose(np.exp(got), expected, atol=1e-6)
    assert ens.num_parameters == 20 and ens.name == "ensemble(a + b)"
    assert [m["name"] for m in ens.fingerprint()["members"]] == ["a", "b"]


def test_build_teacher_dispatch(tiny_llama_dir, tiny_bert_classifier_dir):
    from findistill.teachers import ClassifierTeacher, EnsembleTeacher, PromptedLMTeacher, build_teacher

    lm = TeacherConfig(model=str(tiny_llama_dir), few_shot=3, name="lm")
    clf = TeacherConfig(kind="classifier", model=str(tiny_bert_classifier_dir), name="clf",
                        label_map={"0": "negative", "1": "positive", "2": "neutral"})
    ens = build_teacher(TeacherConfig(kind="ensemble", members=[lm, clf], name="both"),
                        train_texts=[f"t{i}" for i in range(9)], train_labels=[i % 3 for i in range(9)], seed=0)
    assert isinstance(ens, EnsembleTeacher) and ens.name == "both"
    assert isinstance(ens.members[0], PromptedLMTeacher) and isinstance(ens.members[1], ClassifierTeacher)
    assert sorted(y for _, y in ens.members[0].few_shot) == [0, 1, 2]
    logits = ens.class_logits(TEXTS[:3], progress=False)
    assert logits.shape == (3, 3) and np.isfinite(logits).all()
    assert np.allclose(np.exp(logits).sum(-1), 1, atol=1e-5)


def test_prompted_lm_with_chat_template(tiny_llama_dir, lm_teacher):
    from transformers import AutoTokenizer

    from findistill.teachers import PromptedLMTeacher

    assert lm_teacher.keeps_last  # LLaMA takes logits_to_keep: only the last position's logits are computed
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = CHAT_TEMPLATE
    cfg = TeacherConfig(model=str(tiny_llama_dir), system_prompt="Be brief.", batch_size=3)
    teacher = PromptedLMTeacher(cfg, model=lm_teacher.model, tokenizer=tok)
    assert teacher.chat and teacher.prompt("hi").endswith("<|assistant|>")
    logits = teacher.class_logits(TEXTS, progress=False)
    assert logits.shape == (len(TEXTS), 3) and np.isfinite(logits).all()
    assert teacher.fingerprint()["chat_template"] == CHAT_TEMPLATE
    assert teacher.fingerprint() != lm_teacher.fingerprint()


def test_missing_model_is_one_line_model_error(tmp_path):
    from findistill.teachers import PromptedLMTeacher

    with pytest.raises(ModelError) as err:
        PromptedLMTeacher(TeacherConfig(model=str(tmp_path / "nope")), device="cpu")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------- backend seam


def test_prompt_longer_than_max_length_warns_once_with_count(tiny_llama_dir, caplog):
    import logging

    from findistill.teachers import PromptedLMTeacher

    probe = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir)), device="cpu")
    limit = len(probe.encode("short")) + 4  # the short prompt fits, the two long ones do not
    teacher = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), max_length=limit, batch_size=2),
                                model=probe.model, tokenizer=probe.tokenizer)
    with caplog.at_level(logging.WARNING, logger="findistill.teachers"):
        teacher.class_logits(["Apple " * 100, "short", "Tesla " * 50], progress=False)
    cut = [r for r in caplog.records if "max_length" in r.getMessage()]
    assert len(cut) == 1 and "2 of 3 prompts" in cut[0].getMessage()
    caplog.clear()
    roomy = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), max_length=256), model=teacher.model,
                              tokenizer=teacher.tokenizer)
    with caplog.at_level(logging.WARNING, logger="findistill.teachers"):
        roomy.class_logits(["short", "also short"], progress=False)
    assert not [r for r in caplog.records if "max_length" in r.getMessage()]


def test_hf_backend_log_probs_are_normalised_over_the_vocabulary(lm_teacher):
    from findistill.teachers.backends import HFBackend

    backend = lm_teacher.backend
    assert isinstance(backend, HFBackend) and backend.name == "hf"
    prompts = [lm_teacher.encode(t) for t in TEXTS[:3]]
    every = list(range(backend.model.config.vocab_size))
    log_probs = backend.token_logprobs(prompts, every, batch_size=2, progress=False)  # [3, V]
    assert log_probs.shape == (3, len(every))
    np.testing.assert_allclose(np.logaddexp.reduce(log_probs.astype(np.float64), axis=-1), 0.0, atol=1e-4)
    # The class logits are the per-class log-sum-exp of exactly these columns.
    got = lm_teacher.class_logits(TEXTS[:3], progress=False)
    ref = np.stack([np.logaddexp.reduce(log_probs[:, ids].astype(np.float64), axis=-1)
                    for ids in lm_teacher.label_token_ids], axis=-1)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_hf_fingerprint_has_no_backend_entry_so_old_caches_stay_valid(lm_teacher):
    assert "backend" not in lm_teacher.fingerprint()


def test_a_registered_backend_is_used_and_recorded(tiny_llama_dir, lm_teacher, monkeypatch):
    """Adding a backend is one entry in BACKENDS: the teacher runs on it and its identity enters the fingerprint."""
    import findistill.teachers as teacher_mod
    from findistill.teachers import backends

    class RecordingBackend(backends.HFBackend):
        name = "recording"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = []

        def token_logprobs(self, prompts, token_ids, batch_size, progress=True, desc="teacher"):
            self.calls.append((len(prompts), list(token_ids)))
            return super().token_logprobs(prompts, token_ids, batch_size, progress, desc)

        def identity(self):
            return {"backend": {"name": self.name}}

    monkeypatch.setitem(backends.BACKENDS, "vllm", RecordingBackend)
    cfg = TeacherConfig(model=str(tiny_llama_dir), batch_size=4, few_shot=2, backend="vllm")
    teacher = teacher_mod.PromptedLMTeacher(cfg, few_shot=lm_teacher.few_shot, device="cpu")
    assert isinstance(teacher.backend, RecordingBackend)
    got = teacher.class_logits(TEXTS, progress=False)
    flat = sorted({t for ids in teacher.label_token_ids for t in ids})
    assert len(teacher.backend.calls) == 1 and sorted(teacher.backend.calls[0][1]) == flat  # one call, label ids only
    np.testing.assert_allclose(got, lm_teacher.class_logits(TEXTS, progress=False), atol=1e-5)
    assert teacher.fingerprint()["backend"] == {"name": "recording"}
    assert teacher.fingerprint() != lm_teacher.fingerprint()
    # An in-memory model always runs on hf (the teacher fine-tune reads its model this way).
    assert teacher_mod.PromptedLMTeacher(cfg, model=lm_teacher.model, tokenizer=lm_teacher.tokenizer).backend.name == "hf"


def test_release_frees_the_backend(tiny_llama_dir):
    from findistill.teachers import PromptedLMTeacher

    teacher = PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir)), device="cpu")
    teacher.release()
    assert teacher.model is None
    with pytest.raises(ModelError, match="released"):
        teacher.class_logits(["x"], progress=False)


def test_vllm_backend_config_checks():
    from findistill.config import ConfigError, TeacherFinetuneConfig, VLLMSettings, from_dict, RunConfig

    assert TeacherConfig().backend == "hf"
    with pytest.raises(ConfigError, match=r"^teacher\.backend: vllm runs prompted_lm teachers only"):
        from_dict(RunConfig, {"teacher": {"kind": "classifier", "backend": "vllm"}})
    with pytest.raises(ConfigError, match="method head"):
        TeacherConfig(backend="vllm", finetune=TeacherFinetuneConfig(enabled=True, method="head"))
    with pytest.raises(ConfigError, match=r"^teacher\.vllm\.gpu_memory_utilization: must be in \(0, 1\]"):
        from_dict(RunConfig, {"teacher": {"backend": "vllm", "vllm": {"gpu_memory_utilization": 1.5}}})
    with pytest.raises(ConfigError, match=r"^teacher\.vllm\.tensor_parallel_size"):
        from_dict(RunConfig, {"teacher": {"vllm": {"tensor_parallel_size": 0}}})
    with pytest.raises(ConfigError, match=r"^teacher\.backend: must be one of hf, vllm"):
        from_dict(RunConfig, {"teacher": {"backend": "onnx"}})
    ok = from_dict(RunConfig, {"teacher": {"backend": "vllm", "vllm": {"max_model_len": 512, "dtype": "float32"}}})
    assert ok.teacher.vllm == VLLMSettings(max_model_len=512, dtype="float32")


def test_vllm_dtype_auto_follows_the_teacher_dtype_rule():
    from findistill.config import VLLMSettings
    from findistill.teachers.backends.vllm import _vllm_dtype

    expected = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    assert _vllm_dtype(TeacherConfig()) == expected
    assert _vllm_dtype(TeacherConfig(dtype="float16")) == "float16"
    assert _vllm_dtype(TeacherConfig(dtype="float16", vllm=VLLMSettings(dtype="float32"))) == "float32"


def test_vllm_backend_without_vllm_is_one_line_model_error(tiny_llama_dir):
    import importlib.util

    from findistill.teachers import PromptedLMTeacher

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: tests/vllm covers the backend")
    with pytest.raises(ModelError, match="needs the vllm package") as err:
        PromptedLMTeacher(TeacherConfig(model=str(tiny_llama_dir), backend="vllm"))
    assert "\n" not in str(err.value)


def test_the_one_label_column_mapping():
    """models.labels.class_columns: names in any case, a label map (by name or id, several columns per class), and a
    one-line error instead of a guess for generic names or a class left without a column."""
    import numpy as np

    from findistill.models.labels import canonical_logits, class_columns

    assert class_columns({0: "Negative", 1: "POSITIVE", 2: "neutral"}) == [[0], [2], [1]]
    five = {0: "strong sell", 1: "sell", 2: "hold", 3: "buy", 4: "strong buy"}
    label_map = {"strong sell": "negative", "sell": "negative", "hold": "neutral", "3": "positive", "4": "positive"}
    columns = class_columns(five, label_map)
    assert columns == [[0, 1], [2], [3, 4]]
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.25, 0.15]]))
    assert np.allclose(np.exp(canonical_logits(logits, columns)), [[0.3, 0.3, 0.4]])  # summed probabilities
    with pytest.raises(ModelError, match="LABEL_0, LABEL_1, LABEL_2, which are not negative, neutral, positive"):
        class_columns({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ModelError, match="maps to class neutral"):
        class_columns({0: "negative", 1: "positive"})
