"""``cos make-tiny-llava``: a tiny, randomly initialised LLaVA-1.5-shaped scorer, built offline.

Used by tests and demos in place of ``llava-hf/llava-1.5-13b-hf``: the same classes
(``LlavaForConditionalGeneration``, ``LlavaProcessor``) and the same chat wording, a CLIP vision tower
of 112 px / patch 14 (64 image tokens), a 2-layer Llama text model, and a BPE tokenizer trained here with
the ``tokenizers`` library in which ``▁yes`` / ``▁no`` (and ``▁Yes`` / ``▁No``) are single tokens and
``<image>`` is a special token. The image processor is the PIL-backed ``CLIPImageProcessorPil``, so
nothing needs torchvision. Everything is deterministic per seed.

``bias="yes"|"no"`` builds a checkpoint that answers that word for every image (a large constant
``down_proj`` bias in the last layer along one hidden axis, read out only by that word's LM-head row):
handy for end-to-end tests that need a known binary code.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from cos.errors import ConfigError

IMAGE_SIZE = 112
PATCH_SIZE = 14
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
BIAS_CHOICES = ("none", "yes", "no")

# Text the BPE merges are learnt from: the chat wording, yes/no answers, and common question words.
_CORPUS = [
    "USER: keyword_list= . Is anything in keyword_list exist in the image? Just answer yes or no. ASSISTANT:",
    "yes no Yes No yes. no. Yes. No. YES NO",
    "What is the person doing in the video? Answer with the option's letter from the given choices directly.",
    "Select the best answer to the following multiple-choice question based on the video. A. B. C. D.",
    "Which color is the object that appears in the middle of the video? red green blue yellow white black",
    "How many times does the man open the door? Where is the cat? When does the car stop? Why",
    "the a an of to and is are was in on at for with from by this that it as be or not",
]


def _build_tokenizer(corpus: tuple[str, ...] = (), vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    alphabet = sorted(set(string.printable) - set(string.whitespace)) + ["▁", "\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + list(corpus)) * 8, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    for word in ("▁yes", "▁no", "▁Yes", "▁No"):
        if tok.token_to_id(word) is None:
            raise RuntimeError(f"tiny tokenizer lacks the single token {word!r}")
    return tok


def build_processor(image_size: int = IMAGE_SIZE, corpus: tuple[str, ...] = (), vocab_size: int = 512):
    """The tiny ``LlavaProcessor``: trained BPE tokenizer (left padding) + ``CLIPImageProcessorPil`` (112 px;
    ``image_size``: another side, e.g. 336 for LLaVA-1.5's 576 image tokens). ``corpus``: extra tokenizer training
    lines (a task's words, so that its prompts are short), with ``vocab_size`` entries in all."""
    from transformers import LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_build_tokenizer(tuple(corpus), vocab_size),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def llava_config(tokenizer, image_size: int, vision: dict, text: dict):
    """A ``LlavaConfig`` as LLaVA-1.5's (CLIP tower, patch 14, layer −2 features without CLS, GELU projector, untied
    Llama LM) with the given widths and depths, wired to ``tokenizer``'s special ids and ``<image>`` token."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=PATCH_SIZE, **vision),
        text_config=LlamaConfig(**text, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def build_model(processor, seed: int = 0, bias: str = "none"):
    """A randomly initialised tiny ``LlavaForConditionalGeneration`` matching ``processor``'s tokenizer."""
    from transformers import LlavaForConditionalGeneration

    if bias not in BIAS_CHOICES:
        raise ConfigError(f"bias must be one of {BIAS_CHOICES}, got {bias!r}")
    tok = processor.tokenizer
    config = llava_config(
        tok, IMAGE_SIZE,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
        text=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.2, mlp_bias=bias != "none"),
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval().to(torch.float32)
    if bias != "none":
        word = tok.convert_tokens_to_ids("▁" + bias)
        lm = model.model.language_model
        axis = 0
        with torch.no_grad():
            for layer in lm.layers:
                layer.mlp.down_proj.bias.zero_()
            lm.layers[-1].mlp.down_proj.bias[axis] = 1e4  # dominates the residual stream after RMSNorm
            lm.norm.weight.fill_(1.0)
            model.lm_head.weight[:, axis] = 0.0
            model.lm_head.weight[word, axis] = 5.0
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    gen.do_sample = False
    return model


#: llava-hf/llava-1.5-13b-hf's shapes: CLIP ViT-L/14-336 (576 image tokens) + Vicuna-13B (40 layers, 5120 wide)
FULL_IMAGE_SIZE = 336
FULL_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768)
FULL_TEXT = dict(vocab_size=32064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                 num_key_value_heads=40, max_position_embeddings=4096, rms_norm_eps=1e-5)


def build_full_llava_scorer(device, dtype: torch.dtype = torch.float16, seed: int = 0, mode: str = "generate", batch_size: int = 16,
                            load_in_4bit: bool = False, vision: dict | None = None, text: dict | None = None):
    """A :class:`cos.scoring.LlavaScorer` with LLaVA-1.5-13B's shapes and random weights, built directly on ``device`` in
    ``dtype`` (no checkpoint on disk), for ``cos bench --size full``. The tokenizer is the tiny one (ids fit the
    32 064-row vocabulary), the image side 336 px. ``load_in_4bit``: the linear layers (all but ``lm_head``, as
    transformers' bitsandbytes loader does) quantized to 4-bit by bitsandbytes, computing in ``dtype``; CUDA only.
    ``vision`` / ``text``: other widths and depths (tests build the same thing small)."""
    from transformers import LlavaForConditionalGeneration

    from cos.scoring import LlavaScorer

    processor = build_processor(FULL_IMAGE_SIZE)
    tok = processor.tokenizer
    config = llava_config(tok, FULL_IMAGE_SIZE, vision or FULL_VISION, text or FULL_TEXT)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.requires_grad_(False)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id, gen.do_sample = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, False
    if load_in_4bit:
        quantize_linear_4bit(model, dtype, skip=("lm_head",))
    name = "random llava-1.5-13b shapes" + (" (4-bit)" if load_in_4bit else "")
    return LlavaScorer.from_model(model, processor, name=name, mode=mode, batch_size=batch_size, dtype=dtype)


def quantize_linear_4bit(model, compute_dtype: torch.dtype, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Replace every ``nn.Linear`` of ``model`` (on a CUDA device) whose name does not end with one of ``skip`` by a
    bitsandbytes ``Linear4bit`` holding its weights quantized with what ``BitsAndBytesConfig(load_in_4bit=True)``
    uses by default (``fp4``, no double quantization); returns how many were replaced. Each float layer is released
    as soon as it is replaced, so the peak is the float model plus one layer."""
    from cos.errors import ConfigError

    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError("a 4-bit scorer needs bitsandbytes (pip install -e '.[gpu]')") from None
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and not name.endswith(skip)]
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        child = getattr(parent, child_name)
        if child.weight.device.type != "cuda":
            raise ConfigError(f"4-bit quantization needs the model on a CUDA device, {name} is on {child.weight.device}")
        layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None, compute_dtype=compute_dtype,
                                  compress_statistics=False, quant_type="fp4", device="meta")
        layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=False,
                                         quant_type="fp4").to(child.weight.device)  # .to(cuda) quantizes
        if child.bias is not None:
            layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        setattr(parent, child_name, layer)
        del child, layer
    torch.cuda.empty_cache()
    return len(names)


def build_tiny_llava(out_dir, seed: int = 0, bias: str = "none") -> Path:
    """Write a tiny random LLaVA checkpoint (model + processor) to ``out_dir`` and return its path.

    ``LlavaScorer(pretrained=out_dir)`` and ``AutoProcessor.from_pretrained(out_dir)`` load it offline.
    Same ``seed`` → same weights and tokenizer.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    model = build_model(processor, seed=seed, bias=bias)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_llava_command(args) -> int:
    """``cos make-tiny-llava OUT [--seed S] [--bias yes|no]``: build, print the path, return 0."""
    path = build_tiny_llava(args.out, seed=args.seed, bias=args.bias)
    print(path)
    return 0


def add_parser(subparsers):
    """Register ``make-tiny-llava`` on the ``cos`` subparsers (see :mod:`cos_runtime.cli`)."""
    p = subparsers.add_parser(
        "make-tiny-llava",
        help="write a tiny random LLaVA scorer checkpoint (tests, demos)",
        description="Write a tiny, randomly initialised LLaVA-1.5-shaped scorer checkpoint, built offline.",
        allow_abbrev=False,
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.add_argument(
        "--bias",
        choices=BIAS_CHOICES,
        default="none",
        help="'yes'/'no': the scorer answers that word for every image (default: none, random answers)",
    )
    p.set_defaults(func=make_tiny_llava_command)
    return p
