"""build_student / save_student on tiny random BLOOM (decoder-only) and BERT (encoder) folders."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from findistill.config import LABELS, LoraSettings, StudentConfig
from findistill.errors import ModelError
from findistill.models.student import build_student, count_parameters, default_target_modules, save_student

TEXTS = ["$AAPL soars on strong earnings", "Tesla shares fall sharply #3", "the bank files quarterly report"]


def _perturb_adapters_and_head(model) -> None:
    """LoRA B starts at zero (merged == unmerged trivially): give adapters and the head copy random weights."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _logits(model, tokenizer, texts):
    model.eval()
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("fixture, head", [("tiny_bloom_dir", "score"), ("tiny_bert_dir", "classifier")])
def test_lora_student_trains_adapters_and_head_only(request, fixture, head):
    folder = request.getfixturevalue(fixture)
    model, tok = build_student(StudentConfig(model=str(folder), lora=LoraSettings(r=4, alpha=8)))
    total, trainable = count_parameters(model)
    assert 0 < trainable < total
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or f"{head}.modules_to_save" in n for n in trainable_names)
    assert any(f"{head}.modules_to_save" in n for n in trainable_names)  # the head trains (peft SEQ_CLS)
    cfg = model.config
    assert cfg.id2label == dict(enumerate(LABELS)) and cfg.label2id == {n: i for i, n in enumerate(LABELS)}
    assert cfg.pad_token_id == tok.pad_token_id is not None
    if fixture == "tiny_bloom_dir":
        assert tok.padding_side == "right"


def test_default_target_modules_per_architecture(tiny_bloom_dir, tiny_bert_dir):
    bloom = AutoModelForSequenceClassification.from_pretrained(tiny_bloom_dir, num_labels=3)
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    assert default_target_modules(bloom) == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    assert default_target_modules(bert) == ["query", "key", "value", "dense"]
    bert.config.model_type = "something-new"
    assert default_target_modules(bert) == "all-linear"


def test_full_student_trains_everything(tiny_bert_dir):
    model, _ = build_student(StudentConfig(model=str(tiny_bert_dir), method="full"))
    total, trainable = count_parameters(model)
    assert total == trainable


def test_missing_pad_token_falls_back_to_eos(tiny_bloom_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_bloom_dir)
    tok.pad_token = None
    folder = tmp_path / "nopad"
    tok.save_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bloom_dir, num_labels=3)
    model.config.pad_token_id = None
    model.save_pretrained(folder)
    model, tok = build_student(StudentConfig(model=str(folder), lora=LoraSettings(r=2, alpha=4)))
    assert tok.pad_token == tok.eos_token
    assert model.config.pad_token_id == tok.eos_token_id
    logits = _logits(model, tok, TEXTS)  # batch > 1 needs the pad id to pool the last real token
    assert logits.shape == (3, 3)


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        build_student(StudentConfig(model=str(tmp_path / "nope")))


@pytest.mark.parametrize("fixture", ["tiny_bloom_dir", "tiny_bert_dir"])
def test_saved_student_is_a_plain_pipeline_folder(request, tmp_path, fixture):
    folder = request.getfixturevalue(fixture)
    model, tok = build_student(StudentConfig(model=str(folder), lora=LoraSettings(r=4, alpha=8)))
    _perturb_adapters_and_head(model)
    before = _logits(model, tok, TEXTS)  # un-merged peft model

    out = save_student(model, tok, tmp_path / "student")
    assert (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    assert not list(tmp_path.glob(".student.*"))  # the atomic temp folder is gone

    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    loaded_tok = AutoTokenizer.from_pretrained(out)
    assert loaded.config.id2label == dict(enumerate(LABELS))
    assert loaded.config.pad_token_id == loaded_tok.pad_token_id
    after = _logits(loaded, loaded_tok, TEXTS)
    assert torch.allclose(before, after, atol=1e-5)
    # The caller's model is untouched by the merge (save_student merges a copy).
    assert torch.allclose(_logits(model, tok, TEXTS), before, atol=1e-6)

    clf = pipeline("text-classification", model=str(out), device="cpu")
    preds = clf(TEXTS)
    assert len(preds) == 3 and all(p["label"] in LABELS for p in preds)


def test_num_layers_keeps_the_first_layers_and_saves_a_plain_smaller_model(tmp_path, tiny_bert_dir):
    from transformers import AutoModel

    full = AutoModel.from_pretrained(tiny_bert_dir)
    model, tok = build_student(StudentConfig(model=str(tiny_bert_dir), method="full", num_layers=1))
    assert model.config.num_hidden_layers == 1 and len(model.bert.encoder.layer) == 1
    # layer 0 and the embeddings are the pretrained weights, not a fresh initialisation
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.weight,
                               full.encoder.layer[0].attention.self.query.weight)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, full.embeddings.word_embeddings.weight)
    out = save_student(model, tok, tmp_path / "student")
    assert __import__("json").loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    clf = pipeline("text-classification", model=str(out))
    assert clf(TEXTS[0])[0]["label"] in LABELS
    assert len(clf.model.bert.encoder.layer) == 1


def test_num_layers_beyond_the_model_is_one_line(tiny_bert_dir):
    with pytest.raises(ModelError, match=r"student.num_layers: must be in 1..2 for this model, got 3"):
        build_student(StudentConfig(model=str(tiny_bert_dir), num_layers=3))
