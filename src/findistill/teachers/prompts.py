"""Prompt building for prompted-LM teachers: the template, few-shot examples, the chat template, label-word ids.

A prompted LM is read at the end of its prompt: the next-token logits of the verbalizer's label words give the
class logits (see :mod:`findistill.teachers.base`). So every prompt built here ends exactly where the answer begins —
after ``Sentiment:`` in the plain template, or after the assistant header of a chat template.
"""

from __future__ import annotations

import logging

import random
from typing import Any, Sequence

from findistill.config import LABELS, AugmentConfig, TeacherConfig
from findistill.errors import ModelError


log = logging.getLogger(__name__)

def fill_template(template: str, text: str) -> str:
    """``template`` with its ``{text}`` placeholder replaced (plain replace: other braces in it stay as they are)."""
    return template.replace("{text}", text)


def uses_chat_template(tokenizer: Any, cfg: TeacherConfig | AugmentConfig) -> bool:
    """True when prompts for ``cfg`` (a teacher's, or augment's paraphrase prompts) are wrapped in ``tokenizer``'s
    chat template: ``use_chat_template`` is on and the tokenizer has one."""
    return bool(cfg.use_chat_template and getattr(tokenizer, "chat_template", None))


def _answer_word(cfg: TeacherConfig, label: int) -> str:
    return cfg.verbalizer[LABELS[label]][0]


def build_prompt(
    tokenizer: Any, cfg: TeacherConfig, text: str, few_shot: Sequence[tuple[str, int]] = ()
) -> str:
    """The full prompt for ``text``; the answer (a label word) is read right after its end.

    Few-shot examples are completed instances of the same template (example text, then " " + the first label
    word of its class). With a chat template they become alternating user / assistant turns, the system message
    is ``cfg.system_prompt`` when set, and the generation prompt (assistant header) ends the string.
    """
    if uses_chat_template(tokenizer, cfg):
        turns: list[dict[str, str]] = []
        for example, label in few_shot:
            turns.append({"role": "user", "content": fill_template(cfg.prompt, example)})
            turns.append({"role": "assistant", "content": _answer_word(cfg, label)})
        turns.append({"role": "user", "content": fill_template(cfg.prompt, text)})
        if cfg.system_prompt:
            try:
                return _apply_chat(tokenizer, [{"role": "system", "content": cfg.system_prompt}] + turns)
            except Exception:  # templates without a system role (e.g. Gemma) raise: fold it into the first turn
                turns[0] = {"role": "user", "content": f"{cfg.system_prompt}\n\n{turns[0]['content']}"}
        return _apply_chat(tokenizer, turns)
    shots = [f"{fill_template(cfg.prompt, example)} {_answer_word(cfg, label)}" for example, label in few_shot]
    parts = ([cfg.system_prompt] if cfg.system_prompt else []) + shots + [fill_template(cfg.prompt, text)]
    return "\n\n".join(parts)


def _apply_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    out = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(out, str):  # pragma: no cover - tokenize=False returns a string in transformers 5
        raise ModelError(f"chat template returned {type(out).__name__}, expected a string")
    return out


def _first_content_token(tokenizer: Any, word: str) -> int | None:
    """The first token id of ``word`` that is not pure whitespace (sentencepiece may emit a lone '▁' first)."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    for token_id in ids:
        if tokenizer.decode([token_id]).strip():
            return int(token_id)
    return int(ids[0]) if ids else None


def verbalizer_token_ids(tokenizer: Any, verbalizer: dict[str, list[str]]) -> list[list[int]]:
    """Per class, in ``LABELS`` order, the deduplicated first-token ids of its label words.

    Each word is tried as " word" (after a plain prompt such as ``Sentiment:``) and as "word" (at the start of
    an assistant turn), so the same verbalizer works with and without chat templates. A first token shared by
    two classes (e.g. "Negative" and "Neutral" both starting with "N" in some vocabularies) says nothing about
    either, so it is dropped with a warning; a class left with no token of its own raises :class:`ModelError`.
    """
    missing = [name for name in LABELS if not verbalizer.get(name)]
    if missing:
        raise ModelError(f"verbalizer has no label words for {', '.join(missing)}")
    claims: dict[int, dict[str, str]] = {}  # token id -> {class: word that produced it}
    per_class: list[list[int]] = []
    for name in LABELS:
        ids: list[int] = []
        for word in verbalizer[name]:
            for variant in dict.fromkeys((" " + word.strip(), word.strip())):  # ordered, deduplicated
                token_id = _first_content_token(tokenizer, variant)
                if token_id is None:
                    raise ModelError(f"verbalizer word {word!r} of class {name} encodes to no tokens")
                claims.setdefault(token_id, {}).setdefault(name, word)
                if token_id not in ids:
                    ids.append(token_id)
        per_class.append(ids)
    shared = {t: owners for t, owners in claims.items() if len(owners) > 1}
    for token_id, owners in shared.items():
        log.warning("verbalizer: first token %r is shared by %s; it is ignored",
                    tokenizer.decode([token_id]), ", ".join(f"{w!r} ({c})" for c, w in owners.items()))
    result = [[t for t in ids if t not in shared] for ids in per_class]
    for name, ids in zip(LABELS, result):
        if not ids:
            token_id, owners = next((t, o) for t, o in shared.items() if name in o)
            words = " and ".join(f"{w!r} ({c})" for c, w in owners.items())
            raise ModelError(f"verbalizer words {words} share the first token {tokenizer.decode([token_id])!r} "
                             f"(id {token_id}) and class {name} has no other word; choose words that start differently")
    return result


def select_few_shot(
    texts: Sequence[str], labels: Sequence[int], k: int, seed: int
) -> list[tuple[str, int]]:
    """``k`` labelled examples balanced across the classes (round-robin), deterministic for a given ``seed``.

    Labels are canonical ids; ``-1`` (unlabelled) is skipped. The chosen examples are shuffled (seeded) so the
    last example shown — the one a model leans on most — is not always the same class.
    """
    if k <= 0:
        return []
    rng = random.Random(seed)
    pools: list[list[int]] = []
    for class_id in range(len(LABELS)):
        pool = [i for i, label in enumerate(labels) if int(label) == class_id]
        rng.shuffle(pool)
        pools.append(pool)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < k and any(depth < len(pool) for pool in pools):
        for pool in pools:
            if depth < len(pool) and len(chosen) < k:
                chosen.append(pool[depth])
        depth += 1
    rng.shuffle(chosen)
    return [(texts[i], int(labels[i])) for i in chosen]
