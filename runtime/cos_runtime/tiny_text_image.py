"""``cos make-tiny-text-image OUT --kind clip|blip|siglip``: a tiny, randomly initialised text–image model, built offline.

The frame selectors (AKS, BOLT, Q-Frame) score frames with :class:`cos.text_image.TextImageModel`; tests and demos use
these checkpoints in place of ``openai/clip-vit-large-patch14`` (``clip``), ``Salesforce/blip-itm-large-coco``
(``blip``) and ``google/siglip-so400m-patch14-384`` (``siglip``). Each is written by ``save_pretrained`` of the model
(``CLIPModel`` / ``BlipForImageTextRetrieval`` / ``SiglipModel``) and of its processor, so it loads through exactly the
``from_pretrained`` calls the released checkpoints go through. The tokenizers are the real classes in their real
on-disk formats, their vocabularies built here from a small corpus of question-like English (:data:`_CORPUS`):

* CLIP: ``CLIPTokenizer`` (``vocab.json`` + ``merges.txt``, and ``tokenizer.json``): lowercasing byte-level BPE whose
  word-final symbols end in ``</w>``; the merges are learnt here (most frequent pair first, ties by the pair), the
  vocabulary laid out as CLIP's (256 byte symbols, the same with ``</w>``, one entry per merge, then
  ``<|startoftext|>`` and ``<|endoftext|>``, so the end token has the highest id); 77 text positions;
* BLIP: ``BertTokenizer`` (``vocab.txt``, and ``tokenizer.json``): lowercasing WordPiece over ``[PAD]`` (0),
  ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, single characters, ``##`` characters, a few ``##`` suffixes and the
  corpus's words. As in the released BLIP checkpoints the tokenizer is plain BERT and the text embedding has two
  more rows, ``[DEC]`` (``text_config.bos_token_id``) and ``[ENC]`` (the next id); 512 text positions;
* SigLIP: ``SiglipTokenizer`` (``spiece.model``): a sentencepiece model trained here with the ``sentencepiece``
  library on the corpus lowercased and without punctuation (as the tokenizer canonicalises text), ``<pad>`` 0,
  ``</s>`` 1 (also the padding token), ``<unk>`` 2; 64 text positions.

The vocabularies are not learnt with ``tokenizers``' trainers: those break ties between equally frequent pairs in
hash-map order, which differs from one process to the next, so the same seed would not give the same files.

Image processors are the PIL-backed ones (``CLIPImageProcessorPil``, ``BlipImageProcessorPil``,
``SiglipImageProcessorPil``, each configured as its released counterpart but at :data:`IMAGE_SIZE` px), so nothing
needs torchvision. Towers: :data:`IMAGE_SIZE` px images, patch :data:`PATCH_SIZE`, 2 layers, width 32. SigLIP's
``logit_scale`` / ``logit_bias`` are set to SigLIP's initial values (``log 10``, ``-10``) rather than left at zero.

Everything is deterministic: the tokenizers do not depend on the seed, and the same ``seed`` gives byte-identical
files (weights included), in any process.

:func:`build_text_image_shapes` writes the other extreme, for timing (``cos bench --selector``): the released models'
shapes (:data:`REAL_SHAPES`: CLIP ViT-L/14 at 224 or 336 px, BLIP ITM large) with random weights, the same tiny
tokenizers (their ids fall inside the real vocabularies) and the released image processors' settings.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from cos.errors import ConfigError
from vlm_common.tiny_tokenizer import learn_merges

KINDS = ("clip", "blip", "siglip")
IMAGE_SIZE = 32
PATCH_SIZE = 8
#: the towers' shapes (both towers of every kind)
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
PROJECTION_DIM = 16
#: weights are drawn with this std (wider than the released models' 0.02, so that random scores differ between images)
INIT_STD = 0.2

# The text the tokenizers are learnt from: questions about videos, options, answers and caption-like phrases.
_CORPUS = [
    "What is the person doing in the video? Answer with the option's letter from the given choices directly.",
    "Select the best answer to the following multiple-choice question based on the video. A. B. C. D.",
    "Which color is the object that appears in the middle of the video? red green blue yellow white black orange purple",
    "How many times does the man open the door? Where is the cat? When does the car stop? Why does the woman laugh?",
    "What shape is shown when the needle appears: a circle, a square, a triangle or a star?",
    "a photo of a dog running on the beach. a man riding a bicycle down the street. two people talking in a kitchen.",
    "the a an of to and is are was were in on at for with from by this that it as be or not there what who",
    "first second third last before after during while then finally begin end start appear disappear",
    "Is anything in the keyword list visible in the image? Just answer yes or no. yes no",
    "1 2 3 4 5 6 7 8 9 0 ten twenty hundred number count how many people cars animals",
]


def _corpus_lines() -> list[str]:
    return _CORPUS * 4


# ------------------------------------------------------------------------------------------------ CLIP
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
#: CLIP's pre-tokenisation (contractions, letter runs, single digits, punctuation runs) restricted to lowercase ASCII
_CLIP_SPLIT_ASCII = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable-character table, in CLIP's vocabulary order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _clip_merges(merges: int = 300) -> list[tuple[str, str]]:
    """BPE merges learnt on the corpus as CLIP's were: lowercased, split into contractions, letter runs, digits and
    punctuation runs, the last symbol of each word marked with ``</w>`` (the corpus is ASCII, which CLIP's byte
    table maps to itself)."""
    words: Counter = Counter()
    for line in _corpus_lines():
        for word in _CLIP_SPLIT_ASCII.findall(re.sub(r"\s+", " ", line.lower())):
            words[tuple(word[:-1]) + (word[-1] + "</w>",)] += 1
    return learn_merges(words, merges, min_count=1)


def build_clip_tokenizer() -> Any:
    """``CLIPTokenizer`` over a vocabulary laid out as CLIP's: bytes, bytes + ``</w>``, merges, start and end tokens."""
    from transformers import CLIPTokenizer

    merges = _clip_merges()
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    if len(set(tokens)) != len(tokens):
        raise RuntimeError("tiny CLIP vocabulary has duplicate entries")
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), unk_token=CLIP_EOS, bos_token=CLIP_BOS,
                         eos_token=CLIP_EOS, pad_token=CLIP_EOS, model_max_length=77)


def build_clip(seed: int = 0):
    """(model, processor) of a tiny ``CLIPModel`` with ``CLIPProcessor`` (``CLIPImageProcessorPil``: shortest edge
    :data:`IMAGE_SIZE`, centre crop, bicubic, OpenAI mean/std, as ``openai/clip-vit-large-patch14``)."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip import CLIPImageProcessorPil

    tok = build_clip_tokenizer()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok,
    )
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **TOWER),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **TOWER),
        projection_dim=PROJECTION_DIM,
    )
    model = _seeded(CLIPModel, config, seed)
    return model, processor


# ------------------------------------------------------------------------------------------------ BLIP
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: word-final pieces of the tiny WordPiece vocabulary, so that unseen inflections split as in BERT (``open ##ing``)
BERT_SUFFIXES = ["##es", "##ed", "##ing", "##er", "##ly", "##ion", "##al"]


def build_bert_tokenizer() -> Any:
    """``BertTokenizer`` (lowercasing WordPiece) over a vocabulary laid out as ``bert-base-uncased``'s: the special
    tokens (``[PAD]`` 0), single characters, ``##`` characters, a few suffixes, then the corpus's words (BERT's
    pre-tokenisation: punctuation apart), most frequent first (deterministic)."""
    from transformers import BertTokenizer

    counts: Counter = Counter()
    for line in _corpus_lines():
        counts.update(w for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", line.lower()) if len(w) > 1)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    tokens = BERT_SPECIALS + chars + ["##" + c for c in chars] + BERT_SUFFIXES + words
    if len(set(tokens)) != len(tokens):
        raise RuntimeError("tiny BERT vocabulary has duplicate entries")
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True, model_max_length=512)


def build_blip(seed: int = 0):
    """(model, processor) of a tiny ``BlipForImageTextRetrieval`` with ``BlipProcessor`` (``BlipImageProcessorPil``:
    square resize to :data:`IMAGE_SIZE`, bicubic, OpenAI mean/std, as ``Salesforce/blip-itm-large-coco``). The text
    vocabulary is the tokenizer's plus ``[DEC]`` (``bos_token_id``) and ``[ENC]`` (``bos_token_id + 1``), as BLIP's."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    tok = build_bert_tokenizer()
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tok)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok) + 2, bos_token_id=len(tok), pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id,
                         eos_token_id=tok.sep_token_id, max_position_embeddings=512, encoder_hidden_size=TOWER["hidden_size"],
                         **TOWER),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **TOWER),
        projection_dim=PROJECTION_DIM,
        image_text_hidden_size=PROJECTION_DIM,
    )
    model = _seeded(BlipForImageTextRetrieval, config, seed)
    return model, processor


# ---------------------------------------------------------------------------------------------- SigLIP
SIGLIP_PIECES = {"pad_piece": "<pad>", "eos_piece": "</s>", "unk_piece": "<unk>"}


def _canonical(text: str) -> str:
    """SigLIP's text canonicalisation: lowercase, punctuation removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", text.lower().translate(str.maketrans("", "", string.punctuation))).strip()


def train_spiece(path: str | Path, vocab_size: int = 300) -> Path:
    """Train a sentencepiece model (BPE: unigram training finds few pieces in so small a corpus) on the canonicalised
    corpus (one thread: deterministic) into ``path``."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([_canonical(line) for line in _corpus_lines()]), model_writer=buffer, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        shuffle_input_sentence=False, minloglevel=2, **SIGLIP_PIECES,
    )
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    return path


def build_siglip(out_dir: Path, seed: int = 0):
    """(model, processor) of a tiny ``SiglipModel`` with ``SiglipProcessor`` (``SiglipImageProcessorPil``: square
    resize to :data:`IMAGE_SIZE`, bicubic, mean = std = 0.5, as ``google/siglip-so400m-patch14-384``). The
    sentencepiece model is written to ``out_dir/spiece.model``."""
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.models.siglip import SiglipImageProcessorPil

    tok = SiglipTokenizer(vocab_file=str(train_spiece(out_dir / "spiece.model")), model_max_length=64)
    processor = SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tok)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, **TOWER),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, **TOWER),
    )
    model = _seeded(SiglipModel, config, seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model, processor


# ------------------------------------------------------------------------------------------------ common
def _seeded(cls, config, seed: int):
    """``cls(config)`` in float32 with every matrix and bias drawn from ``N(0, INIT_STD²)`` by a generator seeded
    with ``seed`` (layer-norm scales stay 1; the rest of the released initialisation is seeded by ``seed`` too)."""
    torch.manual_seed(seed)
    model = cls(config).eval().to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 or name.endswith(".bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * INIT_STD)
    return model


def build_tiny_text_image(out_dir, kind: str, seed: int = 0) -> Path:
    """Write a tiny random ``kind`` checkpoint (model + processor, ``save_pretrained``) to ``out_dir``; return its path.

    ``cos.text_image.TextImageModel(out_dir)`` and ``AutoProcessor.from_pretrained(out_dir)`` load it offline.
    Same ``seed`` → byte-identical weights.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     names = sorted(p.name for p in build_tiny_text_image(tmp, "clip").iterdir())
    >>> names
    ['config.json', 'merges.txt', 'model.safetensors', 'processor_config.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "clip":
        model, processor = build_clip(seed)
    elif kind == "blip":
        model, processor = build_blip(seed)
    else:
        model, processor = build_siglip(out, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_vocab_files(processor.tokenizer, kind, out)
    return out


# ------------------------------------------------------------------------------------------- real shapes
#: the released checkpoints' shapes, as their ``config.json`` gives them (``cos bench --selector``: what a selector costs).
#: ``clip``: ``openai/clip-vit-large-patch14`` (BOLT; ``image_size=336``: ``openai/clip-vit-large-patch14-336``, Q-Frame);
#: ``blip``: ``Salesforce/blip-itm-large-coco`` (AKS: ViT-L/16 at 384 px, a BERT-base text encoder with cross-attention).
REAL_SHAPES = {
    "clip": {"name": "CLIP ViT-L/14",
             "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                            image_size=224, hidden_act="quick_gelu"),
             "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=49408,
                          max_position_embeddings=77, hidden_act="quick_gelu"),
             "projection_dim": 768},
    "blip": {"name": "BLIP ITM large (ViT-L/16)",
             "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
                            image_size=384),
             "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, vocab_size=30524,
                          max_position_embeddings=512, encoder_hidden_size=1024, bos_token_id=30522),
             "projection_dim": 512, "image_text_hidden_size": 256},
}


def real_shapes_config(kind: str, image_size: int | None = None, tokenizer=None):
    """The ``CLIPConfig`` / ``BlipConfig`` of :data:`REAL_SHAPES` ``[kind]`` (``image_size``: another image side, e.g.
    336), its special-token ids those of ``tokenizer`` (default: the tiny one of :func:`build_tiny_text_image`; its ids
    all fall inside the real vocabulary). The parameter count is the released model's:

    >>> config = real_shapes_config("clip")
    >>> from transformers import CLIPModel
    >>> with torch.device("meta"):
    ...     sum(p.numel() for p in CLIPModel(config).parameters())  # openai/clip-vit-large-patch14
    427616513
    """
    from transformers import BlipConfig, CLIPConfig

    if kind not in REAL_SHAPES:
        raise ConfigError(f"kind must be one of {tuple(REAL_SHAPES)}, got {kind!r}")
    shapes = REAL_SHAPES[kind]
    vision = dict(shapes["vision"], **({"image_size": int(image_size)} if image_size else {}))
    if kind == "clip":
        tok = tokenizer or build_clip_tokenizer()
        text = dict(shapes["text"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=shapes["projection_dim"])
    tok = tokenizer or build_bert_tokenizer()
    text = dict(shapes["text"], pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=shapes["projection_dim"],
                      image_text_hidden_size=shapes["image_text_hidden_size"])


def build_text_image_shapes(out_dir, kind: str, image_size: int | None = None, seed: int = 0, device=None,
                            dtype: torch.dtype = torch.float16) -> Path:
    """Write a checkpoint with a released model's shapes (:data:`REAL_SHAPES`: ``clip`` CLIP ViT-L/14, ``blip`` BLIP ITM
    large; ``image_size`` another side, e.g. 336) and random weights to ``out_dir``; return its path. For timing, not
    for scores: the weights are transformers' own initialisation (seeded by ``seed``), drawn on ``device`` (default
    CPU: in float32, then cast) and saved in ``dtype`` (float16: 0.86 GB for CLIP ViT-L/14, 0.94 GB for BLIP). The
    tokenizer and its files are the tiny one's (:func:`build_tiny_text_image`); the image processor is the released
    one's (CLIP: shortest edge, centre crop; BLIP: square resize; bicubic, OpenAI mean/std) at the image size.
    ``cos.text_image.TextImageModel(out_dir)`` loads it like the released checkpoint."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor, CLIPModel, CLIPProcessor
    from transformers.models.blip import BlipImageProcessorPil
    from transformers.models.clip import CLIPImageProcessorPil

    if kind not in REAL_SHAPES:
        raise ConfigError(f"kind must be one of {tuple(REAL_SHAPES)}, got {kind!r}")
    side = int(image_size or REAL_SHAPES[kind]["vision"]["image_size"])
    if kind == "clip":
        tok = build_clip_tokenizer()
        square = {"height": side, "width": side}
        processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size=square), tokenizer=tok)
        cls = CLIPModel
    else:
        tok = build_bert_tokenizer()
        processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": side, "width": side}), tokenizer=tok)
        cls = BlipForImageTextRetrieval
    config = real_shapes_config(kind, side, tok)
    device = torch.device(device or "cpu")
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype if device.type == "cuda" else torch.float32).eval()
    model.to(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_vocab_files(tok, kind, out)
    return out


def _write_vocab_files(tok, kind: str, out: Path) -> None:
    """The released checkpoints' vocabulary files beside ``tokenizer.json`` (transformers 5 writes only the latter):
    CLIP's ``vocab.json`` + ``merges.txt``, BERT's ``vocab.txt``; each alone loads the same tokenizer."""
    if kind == "clip":
        model = json.loads(tok.backend_tokenizer.to_str())["model"]
        vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    elif kind == "blip":
        vocab = sorted(tok.backend_tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        (out / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")


def make_tiny_text_image_command(args) -> int:
    """``cos make-tiny-text-image OUT --kind clip|blip|siglip [--seed S]``: build, print the path, return 0."""
    print(build_tiny_text_image(args.out, kind=args.kind, seed=args.seed))
    return 0


def add_parser(subparsers):
    """Register ``make-tiny-text-image`` on the ``cos`` subparsers (see :mod:`cos_runtime.cli`)."""
    p = subparsers.add_parser(
        "make-tiny-text-image",
        help="write a tiny random CLIP/BLIP/SigLIP checkpoint (the frame selectors' scorer; tests, demos)",
        description="Write a tiny, randomly initialised CLIP (CLIPModel), BLIP (BlipForImageTextRetrieval) or SigLIP (SiglipModel) "
                    "checkpoint with its processor, in the released on-disk format, built offline.",
        allow_abbrev=False,
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--kind", choices=KINDS, required=True, help="which model family: clip (BOLT, Q-Frame), blip (AKS), siglip (BOLT)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.set_defaults(func=make_tiny_text_image_command)
    return p
