"""The tiny test checkpoints' tokenizer: a Qwen2-style byte-level BPE trained offline on a small corpus.

Deterministic (same corpus and merges, same files); ``AutoTokenizer`` loads it as ``Qwen2Tokenizer`` with
Qwen2's special tokens, so prompts are built exactly as with the released tokenizers.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from vlm_common.qwen import ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS

#: words that must be single tokens (a scorer reads P(yes) / P(no) from one position)
YES_NO = ("yes", "no", "Yes", "No")


def byte_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable character map, indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def learn_merges(words: Counter, n_merges: int, min_count: int = 2) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from word counts (each word a sequence of symbols): most frequent pair first, ties broken
    by the pair itself, so the result is deterministic (``tokenizers``' trainers break ties in hash-map order, which
    varies per process); stops after ``n_merges`` or when the best pair occurs fewer than ``min_count`` times."""
    segs = {tuple(w): count for w, count in words.items()}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for s, count in segs.items():
            for pair in zip(s, s[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        merges.append(best)
        joined = best[0] + best[1]
        merged: dict[tuple[str, ...], int] = {}
        for s, count in segs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        segs = merged
    return merges


def train_bpe(text: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Deterministic byte-level BPE: vocab (bytes first, then merges in order) and merges."""
    vocab = {ch: i for i, ch in enumerate(byte_alphabet())}
    merges = learn_merges(Counter(w for w, _ in pre_tokenizer().pre_tokenize_str(text)), n_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def write_tiny_tokenizer(out_dir: str | os.PathLike, corpus: str, n_merges: int = 300, model_max_length: int = 32768,
                         extra_config: dict | None = None) -> int:
    """Write a Qwen2-style tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json``,
    ``merges.txt``) trained on ``corpus``, with Qwen2's special tokens (``<|endoftext|>``, ``<|im_start|>``,
    ``<|im_end|>``, in that order after the BPE vocabulary), that ``AutoTokenizer`` loads as
    ``Qwen2Tokenizer``; "yes"/"no" (any case, with or without a leading space) are single tokens.
    ``extra_config`` is merged into ``tokenizer_config.json``. Returns ``len(tokenizer)``."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # each answer word many times both after a space and at a line start (no leading space)
    corpus = corpus + "".join(f"{w}\n{w} {w}.\n" for w in YES_NO for _ in range(8))
    vocab, merges = train_bpe(corpus, n_merges)
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
            fuse_unk=False, byte_fallback=False)
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    for word in (*YES_NO, *(" " + w for w in YES_NO)):
        if len(tok.encode(word).ids) != 1:
            raise RuntimeError(f"tiny tokenizer splits {word!r}: {tok.encode(word).tokens}")
    tok.save(str(out_dir / "tokenizer.json"))
    n = len(vocab)
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(n + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        **(extra_config or {}),
    }
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(out_dir / "vocab.json", vocab)
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return n + len(SPECIAL_TOKENS)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


__all__ = ["SPECIAL_TOKENS", "YES_NO", "byte_alphabet", "pre_tokenizer", "train_bpe", "write_tiny_tokenizer"]
