"""Shared fixtures: tiny random models with locally trained tokenizers, tiny datasets, the real TFNS folder.

Tiny models are built from config (random weights) and saved as plain Hugging Face folders, once per session.
Their tokenizers are trained here in about a second with the `tokenizers` library, so nothing touches the hub.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_TFNS = REPO.parent / "shared" / "data" / "twitter-financial-news-sentiment"

_SUBJECTS = ["$AAPL", "$TSLA", "$XYZ", "Apple", "Tesla", "Cemex", "the bank", "Nomura", "$BYND", "Carnival"]
_NEG = ["plunges after weak outlook", "cut to sell at Credit Suisse", "misses estimates", "shares fall sharply"]
_POS = ["soars on strong earnings", "upgraded to buy", "beats estimates", "shares jump to record"]
_NEU = ["reports Q3 results", "to present at conference", "announces dividend date", "files quarterly report"]


def make_rows(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Synthetic TFNS-like rows with TFNS label ids (0 Bearish, 1 Bullish, 2 Neutral), every class present."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = [2, 2, 0, 1][i % 4]
        phrase = rng.choice({0: _NEG, 1: _POS, 2: _NEU}[label])
        rows.append((f"{rng.choice(_SUBJECTS)} {phrase} #{i}", label))
    return rows


def write_tfns_folder(folder: Path, n_train: int = 60, n_valid: int = 24) -> Path:
    """A folder laid out like TFNS (sent_train.csv / sent_valid.csv, header text,label)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sent_train.csv", make_rows(n_train, 1)), ("sent_valid.csv", make_rows(n_valid, 2))):
        with open(folder / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    return folder


def build_tokenizer(folder: Path, kind: str = "causal"):
    """Train a small word-piece-ish BPE tokenizer and wrap it as a PreTrainedTokenizerFast saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [t for t, _ in make_rows(400, 7)]
    # Repeated so that the label words become single tokens (the verbalizer reads first-token logits).
    corpus += ["negative neutral positive Sentiment: Tweet: Classify the sentiment of this financial news tweet"] * 50
    corpus += ["Paraphrase this sentence without changing sentiment bearish bullish"] * 3
    specials = ["<pad>", "<s>", "</s>", "<unk>"] if kind == "causal" else ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.BPE(unk_token=specials[3] if kind == "causal" else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if kind == "causal":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>")
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(folder)
    return fast


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer random LLaMA causal LM (teacher side) with its own tokenizer; no pad token in the config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tokenizer(folder, "causal")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _save(LlamaForCausalLM(cfg), tok, folder)


@pytest.fixture(scope="session")
def tiny_bloom_dir(tmp_path_factory) -> Path:
    """A 2-layer random BLOOM causal LM (student side); loaded as AutoModelForSequenceClassification it gets a head."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    folder = tmp_path_factory.mktemp("tiny-bloom")
    tok = build_tokenizer(folder, "causal")
    torch.manual_seed(1)
    cfg = BloomConfig(vocab_size=len(tok), hidden_size=16, n_layer=2, n_head=2,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _save(BloomForCausalLM(cfg), tok, folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer random BERT encoder (student side, like MiniLM) with its own tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = build_tokenizer(folder, "encoder")
    torch.manual_seed(2)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    return _save(BertModel(cfg), tok, folder)


@pytest.fixture(scope="session")
def tiny_bert_classifier_dir(tmp_path_factory) -> Path:
    """A random BERT sequence classifier whose id2label uses its own names (Bearish/Bullish/Neutral)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert-clf")
    tok = build_tokenizer(folder, "encoder")
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                     num_labels=3, id2label={0: "Bearish", 1: "Bullish", 2: "Neutral"},
                     label2id={"Bearish": 0, "Bullish": 1, "Neutral": 2})
    return _save(BertForSequenceClassification(cfg), tok, folder)


@pytest.fixture()
def tiny_tfns_dir(tmp_path) -> Path:
    return write_tfns_folder(tmp_path / "tfns")


@pytest.fixture(scope="session")
def shared_tfns_dir() -> Path:
    if not (SHARED_TFNS / "sent_train.csv").is_file():
        pytest.skip("../shared/data/twitter-financial-news-sentiment is not present")
    return SHARED_TFNS


def require_chromium() -> str:
    """The headless Chromium binary; a test without it is skipped here and fails on CI (.ci/run installs it)."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing on CI (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return chromium


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (a script, not a package) as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
