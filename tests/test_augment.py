"""Paraphrase augmentation: generation (order, determinism, resumable cache) and every filter reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from findistill.data.augment import (
    REASONS,
    AugmentResult,
    Candidate,
    augment,
    build_paraphrase_prompt,
    clean_paraphrase,
    filter_candidates,
    generate_paraphrases,
    load_generator,
)
from findistill.config import AugmentConfig, LABEL2ID
from findistill.data.splits import TextSplit

NEG, NEU, POS = 0, 1, 2
TEXTS = ["$AAPL soars on strong earnings", "Tesla misses estimates", "Nomura files quarterly report"]


class RuleTeacher:
    """Test double for a teacher: keyword rules -> one-hot-ish logits (the teacher itself is not under test)."""

    name = "rules"
    num_parameters = 0

    def __init__(self):
        self.calls = 0

    def class_logits(self, texts, progress=True):
        self.calls += 1
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for row, text in enumerate(texts):
            t = text.lower()
            label = NEU
            if any(w in t for w in ("falling short", "miss", "plunge", "fall", "cut")):
                label = NEG
            elif any(w in t for w in ("beat", "soar", "jump", "strong", "upgrade")):
                label = POS
            out[row, label] = 5.0
        return out

    def fingerprint(self):
        return {"kind": "rules"}


def gen_cfg(**kw) -> AugmentConfig:
    base = dict(num_paraphrases=2, batch_size=4, max_new_tokens=6, temperature=1.0, top_p=0.95, seed=7)
    base.update(kw)
    return AugmentConfig(**base)


@pytest.fixture(scope="module")
def generator(tiny_llama_dir):
    return load_generator(str(tiny_llama_dir))


def _read_cache_pairs(path: Path) -> list[tuple[int, int]]:
    out = []
    for line in path.read_text().splitlines()[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append((rec["i"], rec["k"]))
    return out


def cache_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


# ------------------------------------------------------------------------------------------ generation


def test_load_generator_pads_left_with_pad_token(generator):
    model, tok = generator
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_prompt_raw_and_chat(generator):
    _, tok = generator
    cfg = gen_cfg()
    assert build_paraphrase_prompt(tok, cfg, "X {y} beats") == (
        "Paraphrase this sentence without changing sentiment: X {y} beats\n")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    try:
        prompt = build_paraphrase_prompt(tok, cfg, "X beats")
        assert prompt.startswith("<|user|>Paraphrase") and prompt.endswith("<|assistant|>")
        assert build_paraphrase_prompt(tok, gen_cfg(use_chat_template=False), "X").endswith(": X\n")
    finally:
        tok.chat_template = None


def test_generates_k_per_text_in_order_and_deterministically(generator, tmp_path):
    model, tok = generator
    cfg = gen_cfg()
    first = generate_paraphrases(model, tok, TEXTS, cfg, tmp_path / "a.jsonl", progress=False)
    assert [(c.source_index, c.k) for c in first] == [(i, k) for i in range(3) for k in range(2)]
    assert [c.source_text for c in first] == [t for t in TEXTS for _ in range(2)]
    assert all(isinstance(c.text, str) for c in first)
    again = generate_paraphrases(model, tok, TEXTS, cfg, tmp_path / "b.jsonl", progress=False)
    assert [c.text for c in again] == [c.text for c in first]
    other = generate_paraphrases(model, tok, TEXTS, gen_cfg(seed=8), tmp_path / "c.jsonl", progress=False)
    assert [c.text for c in other] != [c.text for c in first]
    # Only the new tokens are decoded: the prompt never reappears in the output.
    assert not any("without changing sentiment" in c.text for c in first)


def test_greedy_when_temperature_zero(generator, tmp_path):
    model, tok = generator
    out = generate_paraphrases(model, tok, TEXTS[:1], gen_cfg(temperature=0.0), tmp_path / "g.jsonl", progress=False)
    assert out[0].text == out[1].text  # greedy: both paraphrases of a text are the same


def test_resume_after_kill_matches_uninterrupted_run(generator, tmp_path):
    model, tok = generator
    cfg = gen_cfg(batch_size=2)  # 6 pairs -> 3 batches
    full = generate_paraphrases(model, tok, TEXTS, cfg, tmp_path / "full.jsonl", progress=False)

    class Killed(Exception):
        pass

    def kill_after_first(batch_index):
        raise Killed

    path = tmp_path / "resume.jsonl"
    with pytest.raises(Killed):
        generate_paraphrases(model, tok, TEXTS, cfg, path, progress=False, on_batch=kill_after_first)
    assert len(cache_lines(path)) == 2  # the first batch was flushed before the "kill"
    resumed = generate_paraphrases(model, tok, TEXTS, cfg, path, progress=False)
    assert resumed == full
    pairs = [(r["i"], r["k"]) for r in cache_lines(path)]
    assert len(pairs) == len(set(pairs)) == 6


def test_resume_tolerates_truncated_last_line(generator, tmp_path):
    model, tok = generator
    cfg = gen_cfg(batch_size=4)  # batches: pairs 0-3, 4-5
    path = tmp_path / "trunc.jsonl"
    full = generate_paraphrases(model, tok, TEXTS, cfg, path, progress=False)
    lines = path.read_text().split("\n")  # header + 6 records
    # Killed mid-way through writing record 4 (pair (1, 1)): batch 0 is on disk only in part, batch 1 not at all.
    path.write_text("\n".join(lines[:4]) + "\n" + lines[4][: len(lines[4]) // 2])
    assert len(_read_cache_pairs(path)) == 3
    again = generate_paraphrases(model, tok, TEXTS, cfg, path, progress=False)
    assert again == full
    pairs = [(r["i"], r["k"]) for r in cache_lines(path)]
    assert sorted(pairs) == sorted(set(pairs)) and len(pairs) == 6


def test_settings_change_starts_a_new_cache(generator, tmp_path):
    model, tok = generator
    path = tmp_path / "c.jsonl"
    generate_paraphrases(model, tok, TEXTS, gen_cfg(seed=1), path, progress=False)
    header = json.loads(path.read_text().splitlines()[0])
    fresh = generate_paraphrases(model, tok, TEXTS, gen_cfg(seed=2), tmp_path / "ref.jsonl", progress=False)
    out = generate_paraphrases(model, tok, TEXTS, gen_cfg(seed=2), path, progress=False)
    assert out == fresh
    assert json.loads(path.read_text().splitlines()[0])["key"] != header["key"]
    assert len(cache_lines(path)) == 6  # nothing of the seed-1 run was mixed in


# ---------------------------------------------------------------------------------------------- filter

LUPIN = "Lupin reports Q3 results"


def cand(text, source=LUPIN, i=0, k=0):
    return Candidate(i, k, source, text)


@pytest.mark.parametrize(
    "text, reason, flag",
    [
        ("  ...!! ", "empty", None),
        ("", "empty", None),
        ("Sure! Here is a paraphrase: Lupin posts Q3 numbers", "boilerplate", "drop_boilerplate"),
        ("Here's Lupin posting its Q3 results", "boilerplate", "drop_boilerplate"),
        ("As an AI, I think Lupin posted Q3 numbers", "boilerplate", "drop_boilerplate"),
        ("<|im_start|>assistant Lupin posts Q3 numbers", "boilerplate", "drop_boilerplate"),
        ("Lupin reports Q3 results.", "near_copy", "drop_near_copies"),
        ("lupin  reports q3 result", "near_copy", "drop_near_copies"),
        ("Tesla misses estimates on Q3", "split_leak", "drop_split_leaks"),
        ("Lupin Q3", "length", "drop_bad_length"),
        ("Lupin, the Indian drugmaker, has published the results of its third fiscal quarter today, "
         "as scheduled, in Mumbai", "length", "drop_bad_length"),
        ("Lupin has released its Q3 financial data, falling short of predictions", "inconsistent",
         "drop_inconsistent"),
    ],
)
def test_each_reason_and_its_switch(text, reason, flag):
    splits = [LUPIN, "Tesla misses estimates on Q3 https://t.co/abc"]
    labels = [POS]
    # The study's Lupin paraphrase is ~3x its source, so default bounds (2.5) would file it under "length":
    # widen them for that case so the teacher check is what catches it.
    kw = {"max_length_ratio": 4.0} if reason == "inconsistent" else {}
    res = filter_candidates([cand(text)], labels, splits, gen_cfg(**kw), RuleTeacher())
    assert [c.text for c in res.dropped[reason]] == [clean_paraphrase(text)] and res.kept == []
    assert sum(len(v) for v in res.dropped.values()) == 1  # attributed to exactly one (the first) reason
    if flag is not None:
        off = filter_candidates([cand(text)], labels, splits, gen_cfg(**kw, **{flag: False}), RuleTeacher())
        assert len(off.dropped[reason]) == 0
    everything_off = filter_candidates([cand(text)], labels, splits, gen_cfg(filter=False), RuleTeacher())
    assert len(everything_off.kept) == (0 if reason == "empty" else 1)


def test_lupin_consistent_paraphrase_is_kept_with_teacher_logits():
    teacher = RuleTeacher()
    good = cand("Lupin posts strong Q3 results, beating estimates", k=0)
    bad = cand("Lupin has released its Q3 financial data, falling short of predictions", k=1)
    res = filter_candidates([good, bad], [POS], [LUPIN], gen_cfg(max_length_ratio=4.0), teacher)
    assert res.kept == [good] and res.dropped["inconsistent"] == [bad]
    assert teacher.calls == 1  # one batched teacher call
    assert res.kept_logits.shape == (1, 3) and int(res.kept_logits[0].argmax()) == POS
    ex = res.examples()["inconsistent"][0]
    assert ex["source"] == LUPIN and ex["label"] == "positive" and ex["teacher_label"] == "negative"
    # With default bounds the cheaper length check gets it first; either way it never reaches training.
    default = filter_candidates([bad], [POS], [LUPIN], gen_cfg(), RuleTeacher())
    assert default.dropped["length"] == [bad] and default.kept == []


def test_cleaning_wrappers_and_first_reason_order():
    assert clean_paraphrase('  "Paraphrase: \u201cLupin posts Q3 numbers\u201d" ') == "Lupin posts Q3 numbers"
    res = filter_candidates([cand('Paraphrase: "Lupin posts its Q3 numbers"')], [POS], [LUPIN],
                            gen_cfg(drop_inconsistent=False))
    assert [c.text for c in res.kept] == ["Lupin posts its Q3 numbers"]
    # Boilerplate AND near copy: the first check in order (boilerplate) gets it.
    res = filter_candidates([cand("Sure: Lupin reports Q3 results")], [POS], [LUPIN], gen_cfg(near_copy_threshold=0.5),
                            RuleTeacher())
    assert len(res.dropped["boilerplate"]) == 1


def test_duplicates_unlabelled_sources_and_counts_add_up():
    cands = [cand("Lupin posts Q3 numbers", k=0), cand("lupin posts Q3 numbers", k=1),
             cand("Nomura publishes its quarterly filing", "Nomura files quarterly report", i=1),
             cand("", i=1, k=1)]
    res = filter_candidates(cands, [POS, -1], [LUPIN], gen_cfg(), RuleTeacher())
    counts = res.counts()
    assert counts["generated"] == 4 == counts["kept"] + sum(counts["dropped"].values())
    assert list(counts["dropped"]) == list(REASONS)
    assert counts["dropped"]["duplicate"] == 1 and counts["dropped"]["empty"] == 1
    # Source 0 is positive but the rule teacher says neutral -> inconsistent; source 1 has no gold label -> kept.
    assert counts["dropped"]["inconsistent"] == 1 and [c.source_index for c in res.kept] == [1]


def test_no_teacher_warns_and_keeps():
    with pytest.warns(UserWarning, match="consistency"):
        res = filter_candidates([cand("Lupin posts Q3 numbers")], [POS], [LUPIN], gen_cfg())
    assert len(res.kept) == 1 and res.kept_logits is None


# --------------------------------------------------------------------------------------------- augment


def test_augment_end_to_end_only_adds_to_train(generator, tmp_path):
    model, tok = generator
    train = TextSplit("train", TEXTS + ["Cemex upgraded to buy"], [POS, NEG, NEU, POS])
    dev = TextSplit("dev", ["Apple beats estimates"], [POS])
    cfg = gen_cfg(max_source_examples=3, filter=False)
    teacher = RuleTeacher()
    res = augment(cfg, train, [dev.texts], model, tok, teacher, tmp_path / "cache")
    assert isinstance(res, AugmentResult)
    s = res.summary
    assert s["generated"] == 6 and s["kept"] == len(res) == s["generated"] - s["dropped"]["empty"]
    assert set(s["examples"]) == set(REASONS)
    sources = set(res.source_indices)
    assert len(sources) <= 3 and sources <= set(range(len(train)))
    assert res.labels == [train.labels[i] for i in res.source_indices]
    if len(res):
        assert res.teacher_logits.shape == (len(res), 3)
    assert len(list((tmp_path / "cache").glob("paraphrases-*.jsonl"))) == 1
    # Rerun: served from the cache, identical result.
    again = augment(cfg, train, [dev.texts], model, tok, teacher, tmp_path / "cache", progress=False)
    assert again.texts == res.texts and again.source_indices == res.source_indices
    assert LABEL2ID["positive"] == POS


# ------------------------------------------------------------------------------------- generation engine (vLLM)


class CountingEngine:
    """Stand-in for the vLLM teacher backend (vLLM itself runs in tests/vllm): deterministic text from the prompt's
    last tokens and the request seed. What is under test is augment's engine path: order, seeds, cache, resume."""

    name = "vllm"
    dtype = "float32"
    content_digest = "digest"

    def __init__(self, tokenizer):
        from findistill.config import TeacherConfig

        self.tokenizer, self.cfg, self.calls, self.released = tokenizer, TeacherConfig(model="engine-model"), [], False

    def token_logprobs(self, *args, **kwargs):  # part of the backend interface; augment never calls it
        raise AssertionError("not used by generation")

    def identity(self):
        return {"backend": {"name": "vllm", "vllm_version": "test"}}

    def generate(self, prompts, max_new_tokens, temperature, top_p, seeds, progress=False):
        self.calls.append(len(prompts))
        return [f"{self.tokenizer.decode(p[-3:])} v{seed % 1000}" for p, seed in zip(prompts, seeds)]

    def release(self):
        self.released = True


def test_engine_generation_is_ordered_seeded_and_cached_apart_from_hf(generator, tmp_path):
    model, tok = generator
    engine = CountingEngine(tok)
    cfg = gen_cfg(batch_size=2)
    out = generate_paraphrases(engine, tok, TEXTS, cfg, tmp_path / "e.jsonl", progress=False)
    assert [(c.source_index, c.k) for c in out] == [(i, k) for i in range(3) for k in range(2)]
    assert len({c.text for c in out}) == 6  # every (text, k) pair has its own seed
    assert engine.calls == [6]  # the engine schedules all batches of a call itself
    again = generate_paraphrases(engine, tok, TEXTS, cfg, tmp_path / "e.jsonl", progress=False)
    assert again == out and engine.calls == [6]  # served from the cache
    # Engine and transformers samples differ, so their caches have different keys.
    from findistill.data.augment import paraphrase_cache_key

    assert paraphrase_cache_key(engine, tok, TEXTS, cfg)[0] != paraphrase_cache_key(model, tok, TEXTS, cfg)[0]
    assert paraphrase_cache_key(engine, tok, TEXTS, cfg)[1]["model"]["backend"] == "vllm"


def test_engine_generation_resumes_only_the_gaps(generator, tmp_path, monkeypatch):
    import findistill.data.augment as augment_mod

    _, tok = generator
    monkeypatch.setattr(augment_mod, "ENGINE_BATCHES_PER_CALL", 1)  # one flush per generation batch
    cfg = gen_cfg(batch_size=2)  # 3 batches
    full = generate_paraphrases(CountingEngine(tok), tok, TEXTS, cfg, tmp_path / "full.jsonl", progress=False)

    class Killed(Exception):
        pass

    def kill(batch_index):
        raise Killed

    path = tmp_path / "resume.jsonl"
    with pytest.raises(Killed):
        generate_paraphrases(CountingEngine(tok), tok, TEXTS, cfg, path, progress=False, on_batch=kill)
    assert len(cache_lines(path)) == 2
    engine = CountingEngine(tok)
    assert generate_paraphrases(engine, tok, TEXTS, cfg, path, progress=False) == full
    assert engine.calls == [2, 2]  # only the two missing batches


class _LMTeacherOnEngine:
    """A prompted teacher running on ``backend`` (the shape augment looks for), wrapped like CachedTeacher."""

    def __init__(self, backend, model_ref):
        from findistill.config import TeacherConfig

        inner = RuleTeacher()
        inner.backend, inner.cfg = backend, TeacherConfig(model=model_ref)
        self.teacher, self.name, self.num_parameters = inner, "cached", 0
        self.class_logits = inner.class_logits


def test_augment_generates_on_the_teachers_vllm_engine(generator, tmp_path, tiny_llama_dir):
    _, tok = generator
    engine = CountingEngine(tok)
    teacher = _LMTeacherOnEngine(engine, str(tiny_llama_dir))
    train = TextSplit("train", TEXTS + ["Cemex upgraded to buy"], [POS, NEG, NEU, POS])
    cfg = gen_cfg(filter=False, num_paraphrases=1)
    res = augment(cfg, train, [], None, None, teacher, tmp_path / "cache", progress=False)  # no transformers model
    assert engine.calls == [4] and res.summary["generated"] == 4 and not engine.released
    # Without a model and without a vLLM teacher there is nothing to generate with: one line.
    from findistill.errors import ModelError

    with pytest.raises(ModelError, match="no paraphrase model") as err:
        augment(cfg, train, [], None, None, RuleTeacher(), tmp_path / "other", progress=False)
    assert "\n" not in str(err.value)


def test_load_generator_for_vllm_loads_no_weights(tiny_llama_dir):
    model, tok = load_generator(str(tiny_llama_dir), backend="vllm")
    assert model is None and tok.pad_token_id is not None
