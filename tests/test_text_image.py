"""Text–image scoring models (:mod:`cos.text_image`) on tiny offline CLIP / BLIP / SigLIP checkpoints.

Every score is checked against a computation written here from the models' parts (towers, poolers, projections,
heads), on pixels normalised here from the released models' mean/std, and on token ids built here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, BertConfig, BlipConfig, BlipForConditionalGeneration

from cos.errors import ConfigError
from cos.text_image import (
    BLIP_MAX_TEXT_TOKENS,
    TextImageModel,
    clear_text_image_cache,
    get_text_image_model,
)
from cos_runtime.cli import build_parser
from cos_runtime.tiny_text_image import IMAGE_SIZE, build_tiny_text_image

QUESTION = "What color is the car in the video? A. red B. blue C. green D. white. Answer with the option's letter."
LONG_QUESTION = " ".join(["which object appears first in the middle of the video and what color is it?"] * 20)
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MEAN_STD = {"clip": (OPENAI_MEAN, OPENAI_STD), "blip": (OPENAI_MEAN, OPENAI_STD), "siglip": ((0.5,) * 3, (0.5,) * 3)}
KINDS = ("clip", "blip", "siglip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_text_image")
    return {kind: build_tiny_text_image(root / kind, kind, seed=0) for kind in KINDS}


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Six random frames at the towers' size (the processors' resize is then the identity)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(6)]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_text_image_cache()
    yield
    clear_text_image_cache()


def naive_pixels(frames: list[np.ndarray], kind: str) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in MEAN_STD[kind])
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).double() / 255.0
    return ((x - mean) / std).float()


# ------------------------------------------------------------------------------------------- naive scores
def naive_clip(m: TextImageModel, path: Path, frames, text: str, dot: bool = False) -> np.ndarray:
    model = m.model
    ids = torch.tensor([AutoTokenizer.from_pretrained(path)(text).input_ids])
    eos = model.config.text_config.eos_token_id
    assert ids[0, 0] == model.config.text_config.bos_token_id and ids[0, -1] == eos
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=naive_pixels(frames, "clip")).last_hidden_state
        img = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 0]))  # class token
        t_hidden = model.text_model(input_ids=ids).last_hidden_state
        txt = model.text_projection(t_hidden[:, ids.shape[1] - 1])  # the end token, last here
        if dot:
            return (img @ txt.T)[:, 0].double().numpy()
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return ((img @ txt.T)[:, 0] * model.logit_scale.exp()).double().numpy()


def naive_siglip(m: TextImageModel, path: Path, frames, text: str, dot: bool = False) -> np.ndarray:
    model = m.model
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(text).input_ids
    length = model.config.text_config.max_position_embeddings
    assert ids[-1] == tok.eos_token_id and len(ids) < length
    ids = torch.tensor([ids + [tok.pad_token_id] * (length - len(ids))])  # padded to the full length, no mask
    with torch.no_grad():
        vision = model.vision_model
        img = vision.head(vision(pixel_values=naive_pixels(frames, "siglip")).last_hidden_state)
        txt = model.text_model.head(model.text_model(input_ids=ids).last_hidden_state[:, -1])
        if dot:
            return (img @ txt.T)[:, 0].double().numpy()
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return ((img @ txt.T)[:, 0] * model.logit_scale.exp() + model.logit_bias).double().numpy()


def naive_blip(m: TextImageModel, path: Path, frames, text: str) -> np.ndarray:
    model = m.model
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(text).input_ids[:BLIP_MAX_TEXT_TOKENS]
    assert ids[0] == tok.cls_token_id
    enc = model.config.text_config.bos_token_id + 1  # BLIP's [ENC], after [DEC]
    assert enc == len(tok) + 1 < model.config.text_config.vocab_size
    ids = torch.tensor([[enc] + ids[1:]] * len(frames))
    with torch.no_grad():
        image = model.vision_model(pixel_values=naive_pixels(frames, "blip")).last_hidden_state
        out = model.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=image,
                                 encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long)).last_hidden_state
        logits = model.itm_head(out[:, 0]).double()
    return (logits.exp()[:, 1] / logits.exp().sum(dim=1)).numpy()


def test_clip_logits_match_naive_and_clip_forward(tiny, frames):
    m = get_text_image_model(tiny["clip"])
    assert (m.kind, m.score_kind, m.dtype, m.device.type) == ("clip", "logits", torch.float32, "cpu")
    got = m.score(frames, QUESTION)
    assert got.dtype == np.float64 and got.shape == (len(frames),)
    np.testing.assert_allclose(got, naive_clip(m, tiny["clip"], frames, QUESTION), rtol=1e-5, atol=1e-5)
    inputs = m.processor(text=[QUESTION], images=[Image.fromarray(f) for f in frames], return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(got, m.model(**inputs).logits_per_image[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    assert got.std() > 0.05  # the frames get different scores: the comparisons above are not of constants


def test_clip_and_siglip_dot_are_unnormalised_products(tiny, frames):
    for kind, naive in (("clip", naive_clip), ("siglip", naive_siglip)):
        m = get_text_image_model(tiny[kind], score="dot")
        assert m.score_kind == "dot"
        got = m.score(frames, QUESTION)
        np.testing.assert_allclose(got, naive(m, tiny[kind], frames, QUESTION, dot=True), rtol=1e-5, atol=1e-5)
        logits = get_text_image_model(tiny[kind]).score(frames, QUESTION)
        assert not np.allclose(got, logits, atol=1e-3)


def test_siglip_logits_match_naive_and_siglip_forward(tiny, frames):
    m = get_text_image_model(tiny["siglip"])
    assert (m.kind, m.score_kind) == ("siglip", "logits")
    assert m.model.logit_bias.item() == -10.0  # the bias is part of the score checked below
    got = m.score(frames, QUESTION)
    np.testing.assert_allclose(got, naive_siglip(m, tiny["siglip"], frames, QUESTION), rtol=1e-5, atol=1e-5)
    inputs = m.processor(text=[QUESTION], images=[Image.fromarray(f) for f in frames], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        ref = m.model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits_per_image[:, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert got.std() > 0.05


def test_siglip_text_is_padded_to_full_length_without_mask(tiny):
    m = get_text_image_model(tiny["siglip"])
    tokens = m.text_inputs(QUESTION)
    assert set(tokens) == {"input_ids"} and tokens["input_ids"].shape == (1, 64)
    assert tokens["input_ids"][0, -1] == m.tokenizer.pad_token_id
    long = m.text_inputs(LONG_QUESTION)["input_ids"]
    assert long.shape == (1, 64) and long[0, -1] == m.tokenizer.eos_token_id  # truncated, still ends with </s>


def test_blip_itm_matches_naive_and_blip_forward(tiny, frames):
    m = get_text_image_model(tiny["blip"])
    assert (m.kind, m.score_kind) == ("blip", "itm")
    got = m.score(frames, QUESTION)
    assert ((got > 0) & (got < 1)).all()
    np.testing.assert_allclose(got, naive_blip(m, tiny["blip"], frames, QUESTION), rtol=1e-6, atol=1e-6)
    tokens = m.text_inputs(QUESTION)
    pixels = m.pixel_values([Image.fromarray(f) for f in frames])
    n = len(frames)
    with torch.no_grad():
        out = m.model(input_ids=tokens["input_ids"].expand(n, -1), pixel_values=pixels, use_itm_head=True).itm_score
    np.testing.assert_allclose(got, torch.softmax(out, dim=1)[:, 1].numpy(), rtol=1e-6, atol=1e-6)
    assert got.std() > 0.01


def test_blip_text_starts_with_enc_and_is_truncated_to_lavis_length(tiny, frames):
    m = get_text_image_model(tiny["blip"])
    plain = AutoTokenizer.from_pretrained(tiny["blip"])(QUESTION).input_ids
    ids = m.text_inputs(QUESTION)["input_ids"][0].tolist()
    assert ids[0] == m.enc_token_id == m.model.config.text_config.bos_token_id + 1 and ids[1:] == plain[1:]
    long = m.text_inputs(LONG_QUESTION)["input_ids"]
    assert long.shape == (1, BLIP_MAX_TEXT_TOKENS) and long[0, -1] == m.tokenizer.sep_token_id
    # [ENC] matters: the score with BERT's [CLS] first differs
    pixels = m.pixel_values([Image.fromarray(f) for f in frames])
    cls_ids = torch.tensor([plain] * len(frames))
    with torch.no_grad():
        with_cls = torch.softmax(m.model(input_ids=cls_ids, pixel_values=pixels).itm_score, dim=1)[:, 1].numpy()
    assert not np.allclose(m.score(frames, QUESTION), with_cls, atol=1e-4)


def test_scores_do_not_depend_on_batch_size(tiny):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (17 + 3 * i, 45 - 2 * i, 3), dtype=np.uint8) for i in range(7)]
    for kind in KINDS:
        ref = get_text_image_model(tiny[kind], batch_size=16).score(images, QUESTION)
        for bs in (1, 3):
            np.testing.assert_allclose(get_text_image_model(tiny[kind], batch_size=bs).score(images, QUESTION), ref, rtol=1e-5, atol=1e-5)


def test_long_text_is_truncated(tiny, frames):
    for kind in KINDS:
        m = get_text_image_model(tiny[kind])
        s = m.score(frames[:2], LONG_QUESTION)
        assert s.shape == (2,) and np.isfinite(s).all()
    clip = get_text_image_model(tiny["clip"])
    ids = clip.text_inputs(LONG_QUESTION)["input_ids"]
    assert ids.shape == (1, 77) and ids[0, -1] == clip.tokenizer.eos_token_id


def test_image_inputs_grayscale_rgba_pil_and_stacked(tiny):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (21, 33), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((21, 33, 1), 255, np.uint8)], axis=2)
    m = get_text_image_model(tiny["clip"])
    scores = m.score([gray, gray[:, :, None], rgba, Image.fromarray(rgb), Image.fromarray(gray)], QUESTION)
    np.testing.assert_allclose(scores, np.full(5, m.score([rgb], QUESTION)[0]), rtol=1e-6, atol=1e-6)
    stacked = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)  # (N, H, W, 3) frames
    np.testing.assert_allclose(m.score(stacked, QUESTION), m.score(list(stacked), QUESTION), rtol=1e-6, atol=1e-6)
    assert m.score([], QUESTION).shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        m.score([np.zeros((8, 8, 3), dtype=np.float32)], QUESTION)
    with pytest.raises(ValueError, match="shape"):
        m.score([np.zeros((8, 8, 2), dtype=np.uint8)], QUESTION)
    with pytest.raises(TypeError, match="str"):
        m.score([rgb], ["a", "b"])


# -------------------------------------------------------------------------------------------- cache, identity
def test_cache_returns_one_model_per_configuration(tiny):
    before = TextImageModel.constructions
    a = get_text_image_model(tiny["clip"])
    assert get_text_image_model(tiny["clip"]) is a
    assert get_text_image_model(str(tiny["clip"]), score="logits", device="cpu", dtype="float32") is a  # what auto means
    b = get_text_image_model(tiny["clip"], batch_size=3)
    assert b is a and a.batch_size == 3
    assert TextImageModel.constructions == before + 1
    dot = get_text_image_model(tiny["clip"], score="dot")
    assert dot is not a and TextImageModel.constructions == before + 2
    clear_text_image_cache()
    assert get_text_image_model(tiny["clip"]) is not a and TextImageModel.constructions == before + 3


def test_identity(tiny):
    from cos.cache import file_identity

    m = get_text_image_model(tiny["blip"], batch_size=5)
    assert m.identity() == {"pretrained": os.path.abspath(tiny["blip"]), "kind": "blip", "score_kind": "itm", "dtype": "float32",
                            "files": file_identity(tiny["blip"])}
    assert get_text_image_model(os.path.relpath(tiny["blip"])) is m  # one model however its folder is named
    assert get_text_image_model(tiny["clip"], score="dot").identity()["score_kind"] == "dot"
    assert get_text_image_model(tiny["siglip"], dtype="bfloat16").identity()["dtype"] == "bfloat16"


# --------------------------------------------------------------------------------------------------- errors
def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=r"no-such-model.*does not exist"):
        get_text_image_model(missing)
    with pytest.raises(ConfigError, match=r"'no-such-org/no-such-model': not a local directory, and the hub id could not be loaded"):
        get_text_image_model("no-such-org/no-such-model")  # the tests run with HF_HUB_OFFLINE=1


def test_unsupported_model_type_lists_supported(tmp_path, tiny):
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match=r"model_type 'bert'; supported: clip, blip, siglip"):
        TextImageModel(tmp_path / "bert")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(ConfigError, match="cannot load text-image model .*odd"):
        TextImageModel(tmp_path / "odd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot load text-image model .*empty"):
        TextImageModel(tmp_path / "empty")


def test_blip_checkpoint_of_another_head_is_refused(tmp_path, tiny):
    """A BLIP captioning checkpoint has model_type blip but no ITM head: refused, not scored with random weights."""
    out = tmp_path / "blip-caption"
    config = BlipConfig.from_pretrained(tiny["blip"])
    BlipForConditionalGeneration(config).save_pretrained(out)
    for name in os.listdir(tiny["blip"]):
        if name not in ("config.json", "model.safetensors"):
            (out / name).write_bytes((tiny["blip"] / name).read_bytes())
    with pytest.raises(ConfigError, match=r"lacks weights of BlipForImageTextRetrieval.*itm_head"):
        TextImageModel(out)


def test_score_kind_must_apply_to_the_model(tiny):
    with pytest.raises(ConfigError, match=r"'itm' does not apply to a clip model.*'auto', 'logits', 'dot'"):
        get_text_image_model(tiny["clip"], score="itm")
    for score in ("logits", "dot"):
        with pytest.raises(ConfigError, match=rf"'{score}' does not apply to a blip model.*'auto', 'itm'"):
            TextImageModel(tiny["blip"], score=score)
    with pytest.raises(ConfigError, match="must be one of"):
        get_text_image_model(tiny["siglip"], score="cosine")
    with pytest.raises(ConfigError, match="batch_size"):
        get_text_image_model(tiny["siglip"], batch_size=0)


# ----------------------------------------------------------------------------------------- tiny checkpoints
def _digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_tiny_checkpoints_are_in_the_released_formats(tiny):
    files = {kind: set(os.listdir(path)) for kind, path in tiny.items()}
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= files["clip"]
    assert {"vocab.txt", "tokenizer.json"} <= files["blip"]
    assert "spiece.model" in files["siglip"]
    classes = {kind: type(get_text_image_model(path).tokenizer).__name__ for kind, path in tiny.items()}
    assert classes == {"clip": "CLIPTokenizer", "blip": "BertTokenizer", "siglip": "SiglipTokenizer"}
    images = {kind: type(get_text_image_model(path).image_processor).__name__ for kind, path in tiny.items()}
    assert images == {"clip": "CLIPImageProcessorPil", "blip": "BlipImageProcessorPil", "siglip": "SiglipImageProcessorPil"}
    clip = get_text_image_model(tiny["clip"]).tokenizer
    assert clip.convert_ids_to_tokens(clip("What COLOR?").input_ids) == ["<|startoftext|>", "what</w>", "color</w>", "?</w>", "<|endoftext|>"]
    unseen = clip.convert_ids_to_tokens(clip("zebras", add_special_tokens=False).input_ids)
    assert len(unseen) > 1 and "".join(unseen) == "zebras</w>"  # byte-level BPE: no unknown token, word end marked
    assert clip.eos_token_id == len(clip) - 1  # CLIP's layout: the end token last
    vocab_txt = (tiny["blip"] / "vocab.txt").read_text().splitlines()
    assert vocab_txt[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert AutoTokenizer.from_pretrained(tiny["blip"]).tokenize("Opening doors") == ["open", "##ing", "door", "##s"]


def test_vocabulary_files_alone_load_the_same_tokenizers(tmp_path, tiny):
    """``vocab.json`` + ``merges.txt`` (CLIP) and ``vocab.txt`` (BERT) without ``tokenizer.json`` give the same ids."""
    for kind in ("clip", "blip"):
        bare = tmp_path / kind
        bare.mkdir()
        for p in tiny[kind].iterdir():
            if p.name not in ("tokenizer.json", "model.safetensors"):
                (bare / p.name).write_bytes(p.read_bytes())
        full, alone = AutoTokenizer.from_pretrained(tiny[kind]), AutoTokenizer.from_pretrained(bare)
        assert type(alone) is type(full) and alone.get_vocab() == full.get_vocab()
        for text in (QUESTION, "Opening doors quickly! 123 zebras"):
            assert alone(text).input_ids == full(text).input_ids


def test_tiny_checkpoint_is_deterministic_per_seed(tmp_path, tiny):
    for kind in KINDS:
        again = build_tiny_text_image(tmp_path / f"{kind}-again", kind, seed=0)
        assert _digests(again) == _digests(tiny[kind]), kind
        other = build_tiny_text_image(tmp_path / f"{kind}-seed1", kind, seed=1)
        assert _digests(other)["model.safetensors"] != _digests(tiny[kind])["model.safetensors"]
        assert _digests(other)["config.json"] == _digests(tiny[kind])["config.json"]


def test_cli_writes_a_loadable_checkpoint_and_builds_agree_across_processes(tmp_path, tiny, frames):
    out = tmp_path / "cli-clip"
    proc = subprocess.run([sys.executable, "-m", "cos_runtime", "make-tiny-text-image", str(out), "--kind", "clip"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert _digests(out) == _digests(tiny["clip"])  # tokenizer and weights: the same in another process
    m = TextImageModel(out)
    np.testing.assert_allclose(m.score(frames, QUESTION), get_text_image_model(tiny["clip"]).score(frames, QUESTION), rtol=1e-6)
    # the other two kinds, built in another process: byte-identical too
    script = ("import sys; from cos_runtime.tiny_text_image import build_tiny_text_image as b; "
              "[b(sys.argv[1] + '/' + k, k, seed=0) for k in ('blip', 'siglip')]")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for kind in ("blip", "siglip"):
        assert _digests(tmp_path / kind) == _digests(tiny[kind]), kind


def test_cli_parser_accepts_the_three_kinds(capsys):
    parser = build_parser(only="make-tiny-text-image")
    args = parser.parse_args(["make-tiny-text-image", "out", "--kind", "siglip", "--seed", "4"])
    assert (args.out, args.kind, args.seed, args.func.__name__) == ("out", "siglip", 4, "make_tiny_text_image_command")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["make-tiny-text-image", "out", "--kind", "bert"])
    assert exc.value.code == 2 and "invalid choice: 'bert'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["make-tiny-text-image", "out"])  # --kind is required

