"""Text–image matching models: how well does each candidate frame match the question? (the frame selectors' scorer)

The frame selectors (AKS, BOLT, Q-Frame; :mod:`cos.selection`) rank a video's candidate frames by a text–image
score of each frame against the question. :class:`TextImageModel` computes those scores with a CLIP, BLIP or SigLIP
checkpoint through transformers' own classes (``CLIPModel``, ``BlipForImageTextRetrieval``, ``SiglipModel``; the
processor through ``AutoProcessor`` with the PIL image backend, so torchvision is never needed), independently of
the video LLM that answers. The kind is the checkpoint's ``config.model_type``. For images ``I_1..I_n`` and one text
``T``, with ``f(I)`` the projected image features (``get_image_features``), ``g(T)`` the projected text features
(``get_text_features``) and ``cos(a, b) = a·b / (‖a‖ ‖b‖)``:

* ``logits`` (``auto`` for ``clip`` and ``siglip``): ``s_i = exp(logit_scale) · cos(f(I_i), g(T))`` for CLIP —
  CLIP's ``logits_per_image[:, 0]``; BOLT's score (CLIP ViT-L/14, ``openai/clip-vit-large-patch14``, whose
  ``exp(logit_scale)`` is 100: cosine × 100). For SigLIP ``s_i = exp(logit_scale) · cos(f(I_i), g(T)) + logit_bias``
  — SigLIP's ``logits_per_image[:, 0]`` (``sigmoid(s_i)`` is its match probability); BOLT's SigLIP option.
* ``dot`` (``clip``, ``siglip``): ``s_i = f(I_i) · g(T)``, the raw dot product of the unnormalised projected features,
  no scale — the Q-Frame release's score (it ranks raw Long-CLIP dot products; a Long-CLIP converted to transformers'
  CLIP format, 248 text positions, loads as ``clip``).
* ``itm`` (``auto`` for ``blip``, its only kind): ``s_i = softmax(itm_head(h_[ENC]))[1]``, the image-text-matching
  head's "match" probability (``BlipForImageTextRetrieval(..., use_itm_head=True)``, ``softmax(itm_score, dim=1)[:, 1]``)
  — AKS's score (LAVIS ``blip_image_text_matching`` "large", in transformers ``Salesforce/blip-itm-large-coco``).

Text handling, per kind, as each model was trained and as the selectors' releases call it:

* CLIP: truncated to the text tower's ``max_position_embeddings`` (77; 248 for Long-CLIP), no padding (one text);
* SigLIP: ``padding="max_length"`` to ``max_position_embeddings`` (64 for the released models) and truncated to it,
  and no attention mask: SigLIP was trained on fixed-length, pad-filled texts without masking and pools the last
  position (a padding ``</s>``), so shorter padding or a mask would change its text features;
* BLIP: truncated to :data:`BLIP_MAX_TEXT_TOKENS` (35, LAVIS's ``max_txt_len`` for ITM), and the first token
  (``[CLS]``) replaced by ``[ENC]`` before the image-grounded text encoder, as LAVIS's ``BlipITM`` (and BLIP's
  retrieval training) does and transformers' ``BlipForImageTextRetrieval`` does not. ``[ENC]`` is the tokenizer's
  token of that name, else ``text_config.bos_token_id + 1``: BLIP appended ``[DEC]`` then ``[ENC]`` to BERT's
  vocabulary (30522 and 30523 in ``Salesforce/blip-itm-*``, whose tokenizer is plain BERT). The text is taken as
  given (LAVIS's caption processor, which drops some punctuation and keeps 50 words, is the caller's to apply).

Images: PIL images or ``uint8`` arrays (``(H, W, 3)``, ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 4)``), each
converted to RGB and preprocessed by the checkpoint's image processor; a ``(N, H, W, 3)`` array is ``N`` images. They
are scored in batches of ``batch_size`` under ``torch.no_grad()``; CLIP/SigLIP encode the text once per call, BLIP
runs it with every batch (its text encoder attends to the image). Scores are computed in float32 from the features
(whatever the model's dtype) and returned as float64; they do not depend on ``batch_size`` beyond float rounding.

:func:`get_text_image_model` builds each ``(pretrained, score, device, dtype)`` once per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from cos.errors import ConfigError

__all__ = ["TEXT_IMAGE_KINDS", "SCORE_KINDS", "KIND_SCORES", "BLIP_MAX_TEXT_TOKENS", "TextImageModel", "get_text_image_model",
           "clear_text_image_cache"]

#: ``config.model_type`` of the supported checkpoints
TEXT_IMAGE_KINDS = ("clip", "blip", "siglip")
SCORE_KINDS = ("auto", "logits", "dot", "itm")
#: the score kinds that apply to each model kind; the first is what ``auto`` means
KIND_SCORES = {"clip": ("logits", "dot"), "blip": ("itm",), "siglip": ("logits", "dot")}
#: BLIP ITM's text length (LAVIS ``BlipITM.max_txt_len``)
BLIP_MAX_TEXT_TOKENS = 35
_EXAMPLES = {"clip": "openai/clip-vit-large-patch14", "blip": "Salesforce/blip-itm-large-coco", "siglip": "google/siglip-so400m-patch14-384"}


def _model_class(kind: str):
    from transformers import BlipForImageTextRetrieval, CLIPModel, SiglipModel

    return {"clip": CLIPModel, "blip": BlipForImageTextRetrieval, "siglip": SiglipModel}[kind]


def _check_score(score: Any) -> str:
    if score not in SCORE_KINDS:
        raise ConfigError(f"text-image score must be one of {SCORE_KINDS}, got {score!r}")
    return score


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"text-image batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def resolve_score(kind: str, score: str) -> str:
    """The score kind ``score`` means for a ``kind`` model (``auto`` → its first of :data:`KIND_SCORES`); raises
    :class:`ConfigError` when it does not apply, naming those that do.

    >>> resolve_score("clip", "auto"), resolve_score("siglip", "dot"), resolve_score("blip", "auto")
    ('logits', 'dot', 'itm')
    """
    _check_score(score)
    valid = KIND_SCORES[kind]
    if score == "auto":
        return valid[0]
    if score not in valid:
        raise ConfigError(f"text-image score {score!r} does not apply to a {kind} model; for {kind} use one of {('auto', *valid)}")
    return score


def _load_error(pretrained: str, err: BaseException) -> ConfigError:
    path = os.path.expanduser(pretrained)
    hint = (f"expected a checkpoint directory (e.g. written by `cos make-tiny-text-image OUT --kind clip`) or a hub id such as "
            f"{_EXAMPLES['clip']}")
    if os.path.isdir(path):
        return ConfigError(f"cannot load text-image model {pretrained!r}: {type(err).__name__}: {err}")
    looks_local = os.path.isabs(path) or pretrained.startswith((".", "~")) or pretrained.count("/") > 1  # hub ids: name, org/name
    if looks_local:
        return ConfigError(f"text-image model {pretrained!r} does not exist (no such directory); {hint}")
    return ConfigError(f"cannot load text-image model {pretrained!r}: not a local directory, and the hub id could not be loaded "
                       f"({type(err).__name__}: {err}); {hint}")


def read_kind(pretrained: str | os.PathLike) -> str:
    """The kind (``config.model_type``, one of :data:`TEXT_IMAGE_KINDS`) of the checkpoint at ``pretrained``; raises
    :class:`ConfigError` for a checkpoint that cannot be read or has another model type."""
    from transformers import AutoConfig

    name = os.fspath(pretrained)
    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from None
    kind = getattr(config, "model_type", None)
    if kind not in TEXT_IMAGE_KINDS:
        raise ConfigError(f"text-image model {name!r} has model_type {kind!r}; supported: {', '.join(TEXT_IMAGE_KINDS)} "
                          f"(e.g. {', '.join(_EXAMPLES.values())})")
    return kind


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_rgb(image, index: int = 0):
    """``image`` (a PIL image or a ``uint8`` array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``) as an RGB
    PIL image.

    >>> to_rgb(np.zeros((5, 7), dtype=np.uint8)).size, to_rgb(np.zeros((5, 7, 4), dtype=np.uint8)).mode
    ((7, 5), 'RGB')
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image {index}: expected a PIL image or a uint8 array, got an array of {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), mode="L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        pil = Image.fromarray(np.ascontiguousarray(arr), mode="RGB" if arr.shape[2] == 3 else "RGBA")
        return pil if pil.mode == "RGB" else pil.convert("RGB")
    raise ValueError(f"image {index}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {arr.shape}")


class TextImageModel:
    """A CLIP / BLIP / SigLIP checkpoint scoring images against a text (formulas: the module docstring).

    Args:
        pretrained: hub id or local directory of a checkpoint whose ``model_type`` is in :data:`TEXT_IMAGE_KINDS`.
        score: one of :data:`SCORE_KINDS`: ``auto`` (``logits`` for clip/siglip, ``itm`` for blip), ``logits`` and
            ``dot`` (clip, siglip), ``itm`` (blip).
        device, dtype: as :func:`cos.device.normalise_device` / :func:`cos.device.resolve_dtype` (``auto``: CUDA in
            float16 when a GPU is visible, else CPU in float32).
        batch_size: images per forward.

    Attributes: ``kind``, ``pretrained`` (as given), ``score_kind`` (resolved), ``device``, ``dtype``, ``batch_size``,
    ``model``, ``processor``.
    """

    constructions = 0  # incremented per construction; tests use it to check the process-level cache

    def __init__(self, pretrained: str | os.PathLike, score: str = "auto", device=None, dtype=None, batch_size: int = 16):
        from transformers import AutoProcessor

        from cos.device import normalise_device, resolve_dtype

        _check_score(score)
        self.batch_size = _check_batch_size(batch_size)
        self.pretrained = os.fspath(pretrained)
        self.kind = read_kind(self.pretrained)
        self.score_kind = resolve_score(self.kind, score)
        self.device = torch.device(normalise_device(device))
        self.dtype = resolve_dtype(dtype, self.device, gpu_default=torch.float16)
        path = os.path.expanduser(self.pretrained)
        cls = _model_class(self.kind)
        try:
            model, info = cls.from_pretrained(path, dtype=self.dtype, output_loading_info=True)
            self.processor = AutoProcessor.from_pretrained(path, backend="pil")  # PIL image backend: never needs torchvision
        except (OSError, ValueError, KeyError) as err:
            raise _load_error(self.pretrained, err) from None
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            shown = ", ".join(missing[:4]) + (f", … ({len(missing)} in all)" if len(missing) > 4 else "")
            raise ConfigError(f"text-image model {self.pretrained!r} (model_type {self.kind!r}) lacks weights of {cls.__name__}: {shown}; "
                              f"they would be random. Expected a checkpoint of that class, e.g. {_EXAMPLES[self.kind]}")
        self.model = model.eval().to(self.device)
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor
        text_config = self.model.config.text_config
        self.text_length = int(text_config.max_position_embeddings)
        self.enc_token_id: int | None = None
        if self.kind == "blip":
            self.text_length = min(self.text_length, BLIP_MAX_TEXT_TOKENS)
            self.enc_token_id = self._enc_token_id(text_config)
        TextImageModel.constructions += 1

    def _enc_token_id(self, text_config) -> int:
        vocab = self.tokenizer.get_vocab()
        if "[ENC]" in vocab:
            return int(vocab["[ENC]"])
        bos = getattr(text_config, "bos_token_id", None)
        if bos is None or not 0 <= bos + 1 < text_config.vocab_size:
            raise ConfigError(f"text-image model {self.pretrained!r}: cannot find BLIP's [ENC] token (not in the tokenizer, and "
                              f"text_config.bos_token_id + 1 = {None if bos is None else bos + 1} is not a row of its "
                              f"{text_config.vocab_size}-token embedding)")
        return int(bos) + 1

    # ---------------------------------------------------------------------------------------------- identity
    def identity(self) -> dict:
        """What determines the scores: ``pretrained`` (a local folder made absolute, with its files' number, size and
        newest mtime, so a checkpoint rewritten in place is a new identity), ``kind``, ``score_kind`` and the dtype's name."""
        out = {"pretrained": self.pretrained, "kind": self.kind, "score_kind": self.score_kind, "dtype": _dtype_name(self.dtype)}
        folder = os.path.expanduser(self.pretrained)
        if os.path.isdir(folder):
            from cos.cache import file_identity

            out.update(pretrained=os.path.abspath(folder), files=file_identity(folder))
        return out

    def __repr__(self) -> str:
        return (f"TextImageModel({self.pretrained!r}, kind={self.kind!r}, score={self.score_kind!r}, device={str(self.device)!r}, "
                f"dtype={_dtype_name(self.dtype)!r}, batch_size={self.batch_size})")

    # ---------------------------------------------------------------------------------------------- inputs
    def text_inputs(self, text: str) -> dict[str, torch.Tensor]:
        """The token ids (and mask, CLIP only) of ``text`` as this kind's model takes them (one row; see the module
        docstring: CLIP truncated, SigLIP padded to its full length without mask, BLIP truncated to 35 with ``[ENC]``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.kind == "siglip":
            enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.text_length, return_tensors="pt")
            return {"input_ids": enc["input_ids"].to(self.device)}
        enc = self.tokenizer(text, truncation=True, max_length=self.text_length, return_tensors="pt")
        ids = enc["input_ids"].clone()
        if self.kind == "blip":
            ids[:, 0] = self.enc_token_id
        return {"input_ids": ids.to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def pixel_values(self, images: list) -> torch.Tensor:
        """``(B, 3, S, S)`` pixel values of RGB PIL ``images`` from the checkpoint's image processor, on the model's
        device and in its dtype."""
        batch = self.image_processor(images=images, return_tensors="pt")
        return batch["pixel_values"].to(self.device, self.dtype)

    # ---------------------------------------------------------------------------------------------- scores
    def score(self, images: Iterable, text: str) -> np.ndarray:
        """One score per image of ``images`` against ``text`` (float64, ``(len(images),)``); formulas: module docstring."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        rgb = [to_rgb(im, i) for i, im in enumerate(images)]
        if not rgb:
            return np.zeros(0, dtype=np.float64)
        out: list[torch.Tensor] = []
        with torch.no_grad():
            tokens = self.text_inputs(text)
            text_feats = None if self.kind == "blip" else self.model.get_text_features(**tokens).pooler_output.float()
            for start in range(0, len(rgb), self.batch_size):
                pixels = self.pixel_values(rgb[start:start + self.batch_size])
                if self.kind == "blip":
                    out.append(self._itm(pixels, tokens))
                else:
                    out.append(self._similarity(self.model.get_image_features(pixel_values=pixels).pooler_output.float(), text_feats))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    def _similarity(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """``(B,)`` scores from ``(B, D)`` image and ``(1, D)`` text features (float32)."""
        if self.score_kind == "dot":
            return (image_feats @ text_feats.T)[:, 0]
        cos = (image_feats / image_feats.norm(dim=-1, keepdim=True)) @ (text_feats / text_feats.norm(dim=-1, keepdim=True)).T
        logits = cos[:, 0] * self.model.logit_scale.float().exp()
        if self.kind == "siglip":
            logits = logits + self.model.logit_bias.float()
        return logits

    def _itm(self, pixels: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B,)`` BLIP ITM match probabilities of the images ``pixels`` for the one text ``tokens``."""
        n = pixels.shape[0]
        out = self.model(input_ids=tokens["input_ids"].expand(n, -1), attention_mask=tokens["attention_mask"].expand(n, -1),
                         pixel_values=pixels, use_itm_head=True)
        return out.itm_score.float().softmax(dim=1)[:, 1]


# ------------------------------------------------------------------------------------------------ cache
_CACHE: dict[tuple, TextImageModel] = {}


def _key(pretrained: str, score: str, device: str, dtype: torch.dtype) -> tuple:
    return (pretrained, score, device, _dtype_name(dtype))


def get_text_image_model(pretrained: str | os.PathLike, score: str = "auto", device=None, dtype=None, batch_size: int = 16) -> TextImageModel:
    """The :class:`TextImageModel` of ``(pretrained, score, device, dtype)``, built once per process (device and dtype
    resolved first, so ``None`` and ``"cpu"`` on a CPU machine are one model; ``auto`` and the score it means are one
    model too). ``batch_size`` is not part of the key: a cached model gets the new value."""
    from cos.device import normalise_device, resolve_dtype

    _check_score(score)
    batch_size = _check_batch_size(batch_size)
    name = os.fspath(pretrained)
    if os.path.isdir(os.path.expanduser(name)):  # one model however its folder is named (relative, ~, absolute)
        name = os.path.abspath(os.path.expanduser(name))
    dev = normalise_device(device)
    dt = resolve_dtype(dtype, dev, gpu_default=torch.float16)
    key = _key(name, score, dev, dt)
    model = _CACHE.get(key)
    if model is None:
        resolved = _key(name, resolve_score(read_kind(name), score), dev, dt)
        model = _CACHE.get(resolved)
        if model is None:
            model = TextImageModel(name, score=score, device=dev, dtype=dt, batch_size=batch_size)
            _CACHE[resolved] = model
        _CACHE[key] = model
    model.batch_size = batch_size
    return model


def clear_text_image_cache() -> None:
    """Forget every cached text–image model (tests; freeing GPU memory)."""
    _CACHE.clear()
