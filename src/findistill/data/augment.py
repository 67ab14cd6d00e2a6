"""Teacher paraphrase augmentation: generate k paraphrases per training text, then filter them.

The reference study doubles its training data by asking the teacher to "paraphrase this sentence without
changing sentiment" and giving each paraphrase its source's label. Its own example shows the risk: "Lupin reports
Q3 results" (positive) came back as "... falling short of predictions" and kept the positive label. So every
candidate passes a fixed chain of checks, and a dropped candidate is attributed to the FIRST check it fails:

    empty -> boilerplate -> near_copy -> split_leak -> duplicate -> length -> inconsistent

Cheap string checks run first; the teacher (one batched call) only sees their survivors, and its logits for the
kept paraphrases are returned because training uses them as soft labels. Paraphrases only ever join the split of
their source (train); dev/eval texts are only used to detect leaks.

Generation is resumable: finished (source_index, k) pairs are appended to a JSONL cache after every batch, under
a header keyed by a hash of (model, tokenizer, prompts, sampling settings). Each batch has a fixed composition and
a seed derived from (cfg.seed, batch index), so a resumed run produces exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import random
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from findistill.config import LABELS, AugmentConfig
from findistill.errors import ModelError, first_line
from findistill.models.inference import ensure_pad_token
from findistill.io import json_sha256, atomic_write_text
from findistill.teachers.prompts import uses_chat_template

logger = logging.getLogger(__name__)

REASONS: tuple[str, ...] = ("empty", "boilerplate", "near_copy", "split_leak", "duplicate", "length", "inconsistent")
_CACHE_FORMAT = "findistill-paraphrases-v1"


@dataclass(frozen=True)
class Candidate:
    """One generated paraphrase: the ``k``-th of source text ``source_index``."""

    source_index: int
    k: int
    source_text: str
    text: str


# ----------------------------------------------------------------------------------------------- generation


def load_generator(model_ref: str, revision: str | None = None, backend: str = "hf") -> tuple[Any, Any]:
    """(causal LM, tokenizer) for generation: left padding (new tokens follow every prompt), a pad token when missing.

    ``backend="vllm"`` loads the tokenizer only and returns ``(None, tokenizer)``: :func:`augment` then generates on
    the teacher's vLLM engine (or its own one for another model), so no transformers copy of the weights is loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from findistill.models.refs import resolve_model
    from findistill.models.devices import pick_device, pick_dtype

    resolved = resolve_model(model_ref)
    device = pick_device(None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision)
        model = None if backend == "vllm" else AutoModelForCausalLM.from_pretrained(
            resolved, revision=revision, dtype=pick_dtype("auto", device))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load paraphrase model {model_ref!r}: {first_line(err)}") from None
    tokenizer.padding_side = "left"
    ensure_pad_token(tokenizer, owner=f"paraphrase model {model_ref!r}")
    if model is None:
        return None, tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def build_paraphrase_prompt(tokenizer: Any, cfg: AugmentConfig, text: str) -> str:
    """The generation prompt for ``text``: a chat turn + assistant header, or the raw instruction and a newline."""
    instruction = cfg.prompt.replace("{text}", text)  # plain replace: braces inside tweets stay untouched
    if uses_chat_template(tokenizer, cfg):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(out, str):  # pragma: no cover - tokenize=False returns a string in transformers 5
            raise ModelError(f"chat template returned {type(out).__name__}, expected a string")
        return out
    return instruction + "\n"


def _model_fingerprint(model: Any, tokenizer: Any) -> dict:
    """Cheap identity of the generator: reference, class, dtype, generation defaults and a probe of the weights."""
    emb = model.get_input_embeddings().weight
    probe = float(emb.detach().flatten()[:512].float().abs().sum())  # catches re-initialised/re-saved weights
    return {
        "model": str(getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")),
        "class": type(model).__name__,
        "commit": getattr(model.config, "_commit_hash", None),
        "dtype": str(emb.dtype),
        "weights_probe": round(probe, 4),
        "generation_config": model.generation_config.to_diff_dict(),
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
    }


def _is_engine(model: Any) -> bool:
    """True for a teacher backend that generates from token ids (:class:`findistill.teacher.VLLMBackend`)."""
    return callable(getattr(model, "generate", None)) and isinstance(getattr(model, "name", None), str) \
        and hasattr(model, "token_logprobs")


def _engine_fingerprint(engine: Any, tokenizer: Any) -> dict:
    """Identity of a generation engine: backend, model reference and content digest, dtype, engine version."""
    return {
        "backend": engine.name,
        "model": engine.cfg.model,
        "revision": engine.cfg.revision,
        "content_digest": engine.content_digest,
        "dtype": engine.dtype,
        "engine": engine.identity(),  # e.g. the vLLM version
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
    }


def paraphrase_cache_key(model: Any, tokenizer: Any, texts: Sequence[str], cfg: AugmentConfig) -> tuple[str, dict]:
    """(hash, readable metadata) identifying a generation run; a cache file is only reused when the hash matches.

    Batch size is part of it: padding and the joint sampling of a batch change the outputs. ``model`` is a
    transformers model or a generation engine (vLLM); their samples differ, so the engine is part of the key.
    """
    prompts = [build_paraphrase_prompt(tokenizer, cfg, t) for t in texts]  # covers template, chat template, texts
    meta = {
        "model": _engine_fingerprint(model, tokenizer) if _is_engine(model) else _model_fingerprint(model, tokenizer),
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
                     "seed": cfg.seed, "batch_size": cfg.batch_size, "num_paraphrases": cfg.num_paraphrases},
        "prompt": cfg.prompt,
        "num_texts": len(texts),
        # both keys keep the format they were first written in (default json.dumps spacing): caches stay valid
        "prompts_sha256": json_sha256(prompts, sort_keys=False, separators=None),
    }
    key = json_sha256(meta, ensure_ascii=True, separators=None)
    return key, meta


def _batch_seed(seed: int, batch_index: int) -> int:
    # Hashing (rather than seed + index) keeps batch b of seed s unrelated to batch b-1 of seed s+1.
    return int(hashlib.sha256(f"{seed}:{batch_index}".encode()).hexdigest()[:8], 16)


def _read_cache(path: Path, key: str, n: int, k: int) -> dict[tuple[int, int], str] | None:
    """Finished pairs of a cache file with header ``key``; None when absent or written for other settings.
    Lines that do not parse (the truncated last line of a killed process) are skipped; repeated pairs keep the first.
    """
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return None
    if not isinstance(header, dict) or (header.get("format"), header.get("key")) != (_CACHE_FORMAT, key):
        return None
    done: dict[tuple[int, int], str] = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            pair, text = (int(rec["i"]), int(rec["k"])), rec["text"]
        except (KeyError, TypeError, ValueError):  # JSONDecodeError is a ValueError
            continue
        if 0 <= pair[0] < n and 0 <= pair[1] < k and isinstance(text, str):
            done.setdefault(pair, text)
    return done


def _record(pair: tuple[int, int], text: str) -> str:
    return json.dumps({"i": pair[0], "k": pair[1], "text": text}, ensure_ascii=False) + "\n"


def _open_cache(cache_file: Path, key: str, meta: dict, n: int, k: int) -> dict[tuple[int, int], str]:
    """Finished pairs of ``cache_file`` (none when it was written for other settings), rewritten under its header."""
    done = _read_cache(cache_file, key, n, k)
    if done is None and cache_file.exists():
        logger.warning("%s was written for other settings; starting a new paraphrase cache", cache_file)
    done = done or {}
    # Rewrite header + valid records once: drops a truncated tail so appended lines start on a fresh line.
    header = json.dumps({"format": _CACHE_FORMAT, "key": key, "meta": meta}, ensure_ascii=False, default=str) + "\n"
    atomic_write_text(cache_file, header + "".join(_record(p, t) for p, t in sorted(done.items())))
    return done


def _pair_seed(seed: int, pair: tuple[int, int]) -> int:
    return int(hashlib.sha256(f"{seed}:{pair[0]}:{pair[1]}".encode()).hexdigest()[:8], 16)


# An engine schedules its own batches: this many generation batches go to it per call (and per flush to disk).
ENGINE_BATCHES_PER_CALL = 32


def _generate_on_engine(engine: Any, tokenizer: Any, texts: list[str], cfg: AugmentConfig, cache_file: Path,
                        batches: list[list[tuple[int, int]]], done: dict[tuple[int, int], str], progress: bool,
                        on_batch: Callable[[int], None] | None) -> None:
    """Fill ``done`` with the missing pairs, generated on ``engine`` (vLLM), appending each group to the cache.

    Every pair has its own seed (from ``cfg.seed`` and the pair), so its paraphrase does not depend on which
    pairs share its call: a resumed run generates only the gaps. Prompts go in as the same token ids as with
    transformers (the chat template writes its own special tokens, so none are added then).
    """
    from tqdm.auto import tqdm

    add_special = not uses_chat_template(tokenizer, cfg)
    encoded = [tokenizer.encode(build_paraphrase_prompt(tokenizer, cfg, t), add_special_tokens=add_special)
               for t in texts]
    todo = [b for b, batch in enumerate(batches) if any(p not in done for p in batch)]
    bar = tqdm(total=len(batches), initial=len(batches) - len(todo), desc="paraphrase", unit="batch",
               disable=not progress)
    with bar, open(cache_file, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), ENGINE_BATCHES_PER_CALL):
            group = todo[start : start + ENGINE_BATCHES_PER_CALL]
            missing = [p for b in group for p in batches[b] if p not in done]
            new = engine.generate([encoded[i] for i, _ in missing], max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, top_p=cfg.top_p,
                                  seeds=[_pair_seed(cfg.seed, p) for p in missing])
            for pair, text in zip(missing, new):
                done[pair] = text.strip()
                fh.write(_record(pair, done[pair]))
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(group))
            if on_batch is not None:
                on_batch(group[-1])


def generate_paraphrases(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    cfg: AugmentConfig,
    cache_file: Path,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> list[Candidate]:
    """``cfg.num_paraphrases`` paraphrases per text, ordered by (source_index, k), resuming from ``cache_file``.
    ``on_batch(batch_index)`` is called after each generated batch is flushed to disk (progress hooks, tests).
    ``model`` is a transformers causal LM, or a generation engine (the vLLM teacher backend).
    """
    import torch
    from tqdm.auto import tqdm
    k = cfg.num_paraphrases
    key, meta = paraphrase_cache_key(model, tokenizer, texts, cfg)
    cache_file = Path(cache_file)
    done = _open_cache(cache_file, key, meta, len(texts), k)

    # The batch layout depends only on (len(texts), k, batch_size), so batch b is the same in every run.
    pairs = [(i, j) for i in range(len(texts)) for j in range(k)]
    batches = [pairs[s : s + cfg.batch_size] for s in range(0, len(pairs), cfg.batch_size)]
    if _is_engine(model):
        _generate_on_engine(model, tokenizer, texts, cfg, cache_file, batches, done, progress, on_batch)
        return [Candidate(i, j, texts[i], done[(i, j)]) for i, j in pairs]
    use_chat = uses_chat_template(tokenizer, cfg)
    prompts = [build_paraphrase_prompt(tokenizer, cfg, t) for t in texts]
    ensure_pad_token(tokenizer, owner="paraphrase model")  # a tokenizer not loaded via load_generator
    gen_kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.temperature > 0 else {}
    gen_kwargs.update(do_sample=bool(sampling), **sampling)
    device = next(model.parameters()).device
    todo = [b for b, batch in enumerate(batches) if any(p not in done for p in batch)]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must directly follow every prompt
    bar = tqdm(total=len(batches), initial=len(batches) - len(todo), desc="paraphrase", unit="batch",
               disable=not progress)
    try:
        with open(cache_file, "a", encoding="utf-8") as fh:
            for b in todo:
                batch = batches[b]
                # Chat templates already contain BOS; adding special tokens again would double it.
                enc = tokenizer([prompts[i] for i, _ in batch], return_tensors="pt", padding=True,
                                add_special_tokens=not use_chat).to(device)
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), torch.inference_mode():
                    torch.manual_seed(_batch_seed(cfg.seed, b))  # seeds CUDA too; fork_rng restores global state
                    out = model.generate(**enc, **gen_kwargs)
                new = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                # A batch partly on disk (truncated file) is regenerated whole with its seed; only gaps are written.
                for pair, text in zip(batch, new):
                    if pair not in done:
                        done[pair] = text.strip()
                        fh.write(_record(pair, done[pair]))
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(1)
                if on_batch is not None:
                    on_batch(b)
    finally:
        tokenizer.padding_side = old_side
        bar.close()
    return [Candidate(i, j, texts[i], done[(i, j)]) for i, j in pairs]


# -------------------------------------------------------------------------------------------------- filter

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_WS = re.compile(r"\s+")
# A bare label in front of the answer is formatting, not content: strip it. Chatty lead-ins ("Sure, here is
# the paraphrase: ...") are NOT stripped: they signal an instruction-following failure and get dropped.
_LEADING_LABEL = re.compile(
    r"^\s*(paraphrased?|paraphrased (sentence|text|tweet|version)|rephrased( sentence| text| tweet)?)\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb", "`": "`"}
_BOILERPLATE = [
    re.compile(r"^(sure|certainly|of course)\b(?!-)", re.IGNORECASE),
    re.compile(r"^here(\s+is|'s|\u2019s|\s+are)\b", re.IGNORECASE),
    re.compile(r"paraphras|rephrased|as an ai\b|language model", re.IGNORECASE),
    re.compile(r"<\|[^|>]*\|>|\[/?inst\]|<(start|end)_of_turn>|</?s>|###\s*(instruction|response)", re.IGNORECASE),
    re.compile(r"\bassistant\s*:|(^|\n)\s*(user|system)\s*:", re.IGNORECASE),
]


def normalize(text: str, strip_urls: bool = True) -> str:
    """NFKC, lowercase, collapsed whitespace; URLs removed by default (tweets differ only by t.co links)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if strip_urls:
        text = _URL.sub(" ", text)
    return _WS.sub(" ", text).strip()


def clean_paraphrase(text: str) -> str:
    """Strip whitespace, a bare leading label ("Paraphrase:") and matching surrounding quotes."""
    text, previous = text.strip(), None
    while text != previous:  # wrappers nest either way round: '"Paraphrase: “…”"' or 'Paraphrase: "…"'
        previous = text
        stripped = _LEADING_LABEL.sub("", text, count=1).strip()
        text = stripped or text
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
    return text


def _is_boilerplate(text: str, instruction_parts: list[str]) -> bool:
    norm = normalize(text, strip_urls=False)
    return any(p.search(text) for p in _BOILERPLATE) or any(part in norm for part in instruction_parts)


@dataclass
class FilterResult:
    """Kept candidates (cleaned text), dropped ones by reason, and the teacher logits of the kept ones."""

    kept: list[Candidate]
    dropped: dict[str, list[Candidate]]
    kept_logits: np.ndarray | None = None
    teacher_labels: dict[Candidate, int] = field(default_factory=dict)
    source_labels: Sequence[int] = ()

    def counts(self) -> dict[str, Any]:
        dropped = {r: len(self.dropped.get(r, [])) for r in REASONS}
        return {"generated": len(self.kept) + sum(dropped.values()), "kept": len(self.kept), "dropped": dropped}

    def examples(self, n_per_reason: int = 3) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for reason in REASONS:
            rows = []
            for c in self.dropped.get(reason, [])[:n_per_reason]:
                row = {"source": c.source_text, "paraphrase": c.text}
                label = self.source_labels[c.source_index] if self.source_labels else -1
                if label >= 0:
                    row["label"] = LABELS[label]
                if c in self.teacher_labels:
                    row["teacher_label"] = LABELS[self.teacher_labels[c]]
                rows.append(row)
            out[reason] = rows
        return out


def filter_candidates(
    candidates: Sequence[Candidate],
    source_labels: Sequence[int],
    all_split_texts: Iterable[str],
    cfg: AugmentConfig,
    teacher: Any = None,
    progress: bool = False,
) -> FilterResult:
    """Apply the checks in ``REASONS`` order; each dropped candidate is filed under its first failing check.
    ``source_labels[c.source_index]`` is the gold label of a candidate's source (-1: none, consistency unchecked).
    ``all_split_texts``: the texts of every split (train, dev, eval); a paraphrase equal to one of them is a leak.
    With ``cfg.filter`` false only "empty" applies. The teacher, when given, scores all rule survivors in one call.
    """
    on = cfg.filter
    enabled = {"empty": True, "boilerplate": on and cfg.drop_boilerplate, "near_copy": on and cfg.drop_near_copies,
               "split_leak": on and cfg.drop_split_leaks, "duplicate": on, "length": on and cfg.drop_bad_length,
               "inconsistent": on and cfg.drop_inconsistent}
    split_set = {normalize(t) for t in all_split_texts}
    instruction_parts = [p for p in (normalize(s, False) for s in cfg.prompt.split("{text}")) if len(p) >= 12]
    dropped: dict[str, list[Candidate]] = {r: [] for r in REASONS}
    survivors: list[Candidate] = []
    seen: set[str] = set()

    for cand in candidates:
        cand = dataclasses.replace(cand, text=clean_paraphrase(cand.text))
        norm, src = normalize(cand.text), normalize(cand.source_text)
        reason = None
        if not any(ch.isalnum() for ch in cand.text):
            reason = "empty"
        elif enabled["boilerplate"] and _is_boilerplate(cand.text, instruction_parts):
            reason = "boilerplate"
        elif enabled["near_copy"] and (
            norm == src or difflib.SequenceMatcher(None, norm, src, autojunk=False).ratio() >= cfg.near_copy_threshold
        ):
            reason = "near_copy"
        elif enabled["split_leak"] and norm in split_set:
            reason = "split_leak"
        elif enabled["duplicate"] and norm in seen:  # e.g. greedy decoding with k > 1: identical copies
            reason = "duplicate"
        elif enabled["length"] and src and not (
            cfg.min_length_ratio <= len(norm) / len(src) <= cfg.max_length_ratio
        ):
            reason = "length"
        if reason is None:
            seen.add(norm)
            survivors.append(cand)
        else:
            dropped[reason].append(cand)

    logits = None
    teacher_labels: dict[Candidate, int] = {}
    if teacher is not None and survivors:
        logits = np.asarray(teacher.class_logits([c.text for c in survivors], progress=progress), dtype=np.float32)
        if logits.shape != (len(survivors), len(LABELS)):
            raise ValueError(f"teacher returned logits of shape {logits.shape}, expected ({len(survivors)}, 3)")
    elif enabled["inconsistent"] and survivors:
        warnings.warn("augment: no teacher given, so the label-consistency filter was skipped", stacklevel=2)

    kept: list[Candidate] = []
    kept_rows: list[int] = []
    for row, cand in enumerate(survivors):
        gold = source_labels[cand.source_index]
        if logits is not None:
            teacher_labels[cand] = int(np.argmax(logits[row]))
            if enabled["inconsistent"] and gold >= 0 and teacher_labels[cand] != gold:
                dropped["inconsistent"].append(cand)
                continue
        kept.append(cand)
        kept_rows.append(row)
    kept_logits = None if logits is None else logits[kept_rows]
    return FilterResult(kept, dropped, kept_logits, teacher_labels, list(source_labels))


# ------------------------------------------------------------------------------------------------- augment


@dataclass
class AugmentResult:
    """Kept paraphrases with their source's gold label; ``summary`` is the results.json "augment" entry."""

    texts: list[str]
    labels: list[int]
    teacher_logits: np.ndarray | None
    source_indices: list[int]
    summary: dict[str, Any]

    def __len__(self) -> int:
        return len(self.texts)


def _flatten_texts(items: Iterable[Any]) -> Iterable[str]:
    # Accept a flat iterable of texts, or TextSplits / lists of texts (one per split).
    for item in items:
        if isinstance(item, str):
            yield item
        elif hasattr(item, "texts"):
            yield from item.texts
        else:
            yield from item


def _vllm_teacher(teacher: Any) -> Any:
    """The prompted teacher inside ``teacher`` (a :class:`~findistill.cache.CachedTeacher` or not) when it runs on
    vLLM, else None."""
    inner = getattr(teacher, "teacher", teacher)
    backend = getattr(inner, "backend", None)
    return inner if getattr(backend, "name", None) == "vllm" else None


def _generator_for(cfg: AugmentConfig, model: Any, tokenizer: Any, teacher: Any) -> tuple[Any, Any, bool]:
    """(generator, tokenizer, whether the generator was started here and must be released): see :func:`augment`."""
    if _is_engine(model):
        return model, tokenizer or model.tokenizer, False
    lm = _vllm_teacher(teacher)
    if lm is None:
        if model is None:
            raise ModelError("augment has no paraphrase model: load one with load_generator (backend hf), or give a "
                             "teacher that runs on vLLM")
        return model, tokenizer, False
    from findistill.models.refs import resolve_model
    from findistill.teachers.backends import VLLMBackend

    same = cfg.model is None or resolve_model(cfg.model) == resolve_model(lm.cfg.model, lm.cfg.revision)
    if same:
        return lm.backend, lm.backend.tokenizer, False
    logger.info("augment: starting a second vLLM engine for %s (the teacher's engine serves %s)", cfg.model,
                lm.cfg.model)
    engine = VLLMBackend(dataclasses.replace(lm.cfg, model=cfg.model, revision=None))
    return engine, engine.tokenizer, True


def augment(
    cfg: AugmentConfig,
    train: Any,
    other_split_texts: Iterable[Any],
    model: Any,
    tokenizer: Any,
    teacher: Any,
    cache_dir: Path,
    progress: bool = True,
) -> AugmentResult:
    """Paraphrase (a seeded subsample of) ``train``, filter, and return the paraphrases for the train split only.
    ``other_split_texts``: dev/eval (and transfer) texts, only used to detect leaks into those splits.

    When ``teacher`` runs on vLLM (``teacher.backend: vllm``), generation runs on vLLM too: on the teacher's own
    engine when ``cfg.model`` is unset or names the teacher's model, else on a new engine with the teacher's
    ``vllm`` settings; ``model`` (a transformers copy, possibly None) is then not used.
    """
    model, tokenizer, owned = _generator_for(cfg, model, tokenizer, teacher)
    indices = list(range(len(train.texts)))
    if cfg.max_source_examples is not None and cfg.max_source_examples < len(indices):
        indices = sorted(random.Random(cfg.seed).sample(indices, cfg.max_source_examples))
    texts = [train.texts[i] for i in indices]
    key, _ = paraphrase_cache_key(model, tokenizer, texts, cfg)
    # One file per settings hash: switching settings back and forth never throws finished work away.
    cache_file = Path(cache_dir) / f"paraphrases-{key[:16]}.jsonl"
    try:
        local = generate_paraphrases(model, tokenizer, texts, cfg, cache_file, progress=progress)
    finally:
        if owned:
            model.release()
    candidates = [dataclasses.replace(c, source_index=indices[c.source_index]) for c in local]
    all_texts = list(train.texts) + list(_flatten_texts(other_split_texts))
    result = filter_candidates(candidates, list(train.labels), all_texts, cfg, teacher, progress=progress)
    summary = {**result.counts(), "examples": result.examples()}
    logger.info("augment: %d generated, %d kept, dropped %s", summary["generated"], summary["kept"], summary["dropped"])
    return AugmentResult(
        texts=[c.text for c in result.kept],
        labels=[int(train.labels[c.source_index]) for c in result.kept],
        teacher_logits=result.kept_logits,
        source_indices=[c.source_index for c in result.kept],
        summary=summary,
    )
