"""Shot scorers on a tiny offline LLaVA (and a minimal VideoLM for the self scorer).

Defect 4 of the original release (the 13B scorer rebuilt per sample) fails
``test_get_scorer_constructs_once``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM

from cos import scoring
from cos.errors import ConfigError
from cos.protocol import ModelFacts, VideoLM
from cos.scoring import (
    LlavaScorer,
    SelfScorer,
    ShotScores,
    UniformScorer,
    clear_scorer_cache,
    get_scorer,
    llava_prompt,
)
from cos_runtime.cli import main as cli_main
from cos_runtime.tiny_llava import build_tiny_llava

QUESTION = "What color is the car? A. red B. blue. Answer with the option's letter."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="module")
def mosaics():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(5)]


def test_release_prompt_wording():
    assert llava_prompt("Q?") == (
        "USER: <image>\nkeyword_list=Q?. Is anything in keyword_list exist in the image? "
        "Just answer yes or no. ASSISTANT:"
    )


def test_processor_loads_without_torchvision(tiny):
    proc = AutoProcessor.from_pretrained(tiny)
    assert type(proc.image_processor).__name__ == "CLIPImageProcessorPil"
    tok = proc.tokenizer
    for word in ("▁yes", "▁no", "▁Yes", "▁No"):
        assert tok.convert_tokens_to_ids(word) != tok.unk_token_id
    assert tok("<image>", add_special_tokens=False).input_ids == [tok.convert_tokens_to_ids("<image>")]
    assert tok.unk_token_id not in tok(llava_prompt(QUESTION)).input_ids


@torch.no_grad()
def test_generate_mode(tiny, mosaics):
    s = LlavaScorer(pretrained=str(tiny), mode="generate", batch_size=2, device="cpu")
    out = s.score(mosaics, QUESTION)
    assert isinstance(out, ShotScores) and len(out) == len(mosaics)
    # independent reference: one mosaic at a time (no padding), 5 greedy tokens from uncached full forwards,
    # stop at EOS, decoded without special tokens and stripped
    proc = AutoProcessor.from_pretrained(tiny)
    model = LlavaForConditionalGeneration.from_pretrained(tiny).eval()
    want = []
    for im in mosaics:
        inputs = proc(images=[im], text=[llava_prompt(QUESTION)], return_tensors="pt")
        ids, new = inputs["input_ids"], []
        while len(new) < 5 and not (new and new[-1] == proc.tokenizer.eos_token_id):
            logits = model(input_ids=torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1),
                           pixel_values=inputs["pixel_values"], use_cache=False).logits
            new.append(int(logits[0, -1].argmax()))
        want.append(proc.tokenizer.decode(new, skip_special_tokens=True).strip())
    assert out.responses == want
    assert out.decisions.tolist() == [int("yes" in r.lower()) for r in out.responses]
    assert out.scores.tolist() == [float(d) for d in out.decisions]


@torch.no_grad()
def test_logits_mode_matches_independent_probability(tiny, mosaics):
    s = LlavaScorer(pretrained=str(tiny), mode="logits", threshold=0.5, batch_size=3, device="cpu")
    out = s.score(mosaics, QUESTION)
    assert out.responses == [""] * len(mosaics)
    proc = AutoProcessor.from_pretrained(tiny)
    model = LlavaForConditionalGeneration.from_pretrained(tiny).eval()
    tok = proc.tokenizer
    yes = tok.convert_tokens_to_ids(["▁yes", "▁Yes", "▁YES"])
    no = tok.convert_tokens_to_ids(["▁no", "▁No", "▁NO", "no"])
    assert s.yes_ids == sorted(yes) and s.no_ids == sorted(no)
    want = []
    for im in mosaics:
        inputs = proc(images=[im], text=[llava_prompt(QUESTION)], return_tensors="pt")
        probs = model(**inputs).logits[0, -1].double().softmax(-1)
        want.append(float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum())))
    np.testing.assert_allclose(out.scores, want, atol=1e-5)
    assert out.decisions.tolist() == [int(v >= 0.5) for v in out.scores]
    assert len(set(np.round(out.scores, 6))) > 1  # the images matter


def test_batch_size_does_not_change_scores(tiny, mosaics):
    one = LlavaScorer(pretrained=str(tiny), mode="logits", batch_size=1, device="cpu").score(mosaics, QUESTION)
    three = LlavaScorer(pretrained=str(tiny), mode="logits", batch_size=3, device="cpu").score(mosaics, QUESTION)
    np.testing.assert_allclose(one.scores, three.scores, atol=1e-5)
    g1 = LlavaScorer(pretrained=str(tiny), mode="generate", batch_size=1, device="cpu").score(mosaics[:3], QUESTION)
    g3 = LlavaScorer(pretrained=str(tiny), mode="generate", batch_size=3, device="cpu").score(mosaics[:3], QUESTION)
    assert g1.responses == g3.responses


def test_threshold_applies_in_logits_mode(tiny, mosaics):
    low = LlavaScorer(pretrained=str(tiny), mode="logits", threshold=0.0, device="cpu").score(mosaics, QUESTION)
    high = LlavaScorer(pretrained=str(tiny), mode="logits", threshold=1.0, device="cpu").score(mosaics, QUESTION)
    assert low.decisions.tolist() == [1] * len(mosaics)
    assert high.decisions.tolist() == [int(v >= 1.0) for v in high.scores]


def test_get_scorer_constructs_once(tiny, mosaics):
    clear_scorer_cache()
    before = LlavaScorer.constructions
    first = get_scorer("llava", pretrained=str(tiny), mode="logits", device="cpu")
    for _ in range(5):  # one call per "sample", as the lmms-eval adapter does
        again = get_scorer("llava", pretrained=str(tiny), mode="logits", device="cpu")
        assert again is first
        again.score(mosaics[:2], QUESTION)
    assert LlavaScorer.constructions == before + 1
    other = get_scorer("llava", pretrained=str(tiny), mode="generate", device="cpu")
    assert other is not first and LlavaScorer.constructions == before + 2
    clear_scorer_cache()


@pytest.mark.parametrize("bias", ["yes", "no"])
def test_biased_tiny_llava_answers_one_word(tmp_path, mosaics, bias):
    path = build_tiny_llava(tmp_path / bias, seed=1, bias=bias)
    gen = LlavaScorer(pretrained=str(path), mode="generate", device="cpu").score(mosaics[:3], QUESTION)
    assert all(r.split()[0].lower() == bias for r in gen.responses)
    want = 1 if bias == "yes" else 0
    assert gen.decisions.tolist() == [want] * 3
    lg = LlavaScorer(pretrained=str(path), mode="logits", device="cpu").score(mosaics[:3], QUESTION)
    assert lg.decisions.tolist() == [want] * 3
    assert np.all(np.abs(lg.scores - want) < 1e-3)


def test_tiny_llava_cli_is_deterministic(tmp_path):
    assert cli_main(["make-tiny-llava", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert cli_main(["make-tiny-llava", str(tmp_path / "b"), "--seed", "3"]) == 0
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_uniform_scorer():
    clear_scorer_cache()
    s = get_scorer("uniform")
    assert isinstance(s, UniformScorer) and get_scorer("uniform") is s
    out = s.score([Image.new("RGB", (4, 4))] * 3, "q")
    assert out.scores.tolist() == [0.0] * 3 and out.decisions.tolist() == [0] * 3 and out.responses == [""] * 3


def test_invalid_options(tiny):
    with pytest.raises(ConfigError, match="llava.*self.*uniform"):
        get_scorer("clip")
    with pytest.raises(ConfigError, match="generate.*logits"):
        get_scorer("llava", pretrained=str(tiny), mode="sample")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        get_scorer("llava", pretrained=str(tiny), threshold=1.5)
    with pytest.raises(ConfigError, match="unknown option"):
        get_scorer("llava", pretrained=str(tiny), temperature=0.2)
    with pytest.raises(ConfigError, match="batch_size"):
        LlavaScorer(pretrained=str(tiny), batch_size=0)
    with pytest.raises(ConfigError, match="CUDA"):
        LlavaScorer(pretrained=str(tiny), load_in_4bit=True, device="cpu")
    with pytest.raises(ConfigError, match="VideoLM"):
        SelfScorer(object())
    with pytest.raises(ValueError):
        ShotScores(np.array([0.5, 2.0]), np.array([0, 1]), ["", ""])


# ------------------------------------------------------------------------ self scorer on a toy VideoLM
YES, NO, VIDEO = 10, 11, 255


class ToyVideoLM:
    """A minimal VideoLM: tiny Qwen2 + a linear frame encoder (4 tokens per 8×8 frame), char tokenizer."""

    def __init__(self):
        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, initializer_range=0.3)
        self.lm = Qwen2ForCausalLM(cfg).eval()
        self.lm.generation_config.eos_token_id = None
        self.lm.generation_config.pad_token_id = 0
        self.encoder = torch.nn.Linear(3 * 8 * 8, 4 * 64)
        self.calls: list[str] = []
        self.facts = ModelFacts(name="toy", context_budget=None, tokens_per_frame=4)  # what the runtime reads

    def preprocess(self, frames):
        self.calls.append("preprocess")
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.interpolate(x, size=(8, 8), mode="area")

    def encode_frames(self, pixel_values):
        self.calls.append("encode_frames")
        return self.encoder(pixel_values.flatten(1)).view(-1, 4, 64)

    def prompt_ids(self, question):
        self.calls.append("prompt_ids")
        ids = [20 + (ord(c) % 200) for c in question[:40]]
        return torch.tensor([[1, VIDEO] + ids])

    def embed_prompt(self, prompt_ids, frame_features):
        emb = self.lm.get_input_embeddings()(prompt_ids)
        pos = int((prompt_ids[0] == VIDEO).nonzero()[0, 0])
        video = frame_features.reshape(1, -1, 64)
        return torch.cat([emb[:, :pos], video, emb[:, pos + 1:]], dim=1)

    def forward_logits(self, inputs_embeds, attention_mask=None):
        self.calls.append("forward_logits")
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits[:, -1].float()

    def generate(self, inputs_embeds, attention_mask, **kwargs):
        self.calls.append("generate")
        return self.lm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def decode(self, token_ids):
        words = {YES: "yes", NO: "no"}
        return " ".join(words.get(int(t), f"w{int(t)}") for t in token_ids).strip()

    def token_id(self, text):
        ids = {"yes": YES, "no": NO}
        if text not in ids:
            raise KeyError(text)
        return ids[text]


@torch.no_grad()
def test_self_scorer_through_protocol(mosaics):
    model = ToyVideoLM()
    assert isinstance(model, VideoLM)
    out = SelfScorer(model, mode="logits", batch_size=2).score(mosaics, QUESTION)
    assert {"preprocess", "encode_frames", "prompt_ids", "forward_logits"} <= set(model.calls)
    ids = model.prompt_ids(scoring.scoring_question(QUESTION))
    want = []
    for im in mosaics:
        frames = np.array(im)[None]
        emb = model.embed_prompt(ids, model.encode_frames(model.preprocess(frames)))
        logits = model.lm(inputs_embeds=emb).logits[0, -1].double()
        want.append(float(torch.sigmoid(logits[YES] - logits[NO])))
    np.testing.assert_allclose(out.scores, want, atol=1e-5)
    gen = SelfScorer(model, mode="generate").score(mosaics[:3], QUESTION)
    assert len(gen) == 3 and all(len(r.split()) == 5 for r in gen.responses)
    assert gen.decisions.tolist() == [int("yes" in r) for r in gen.responses]
    clear_scorer_cache()
    before = SelfScorer.constructions
    assert get_scorer("self", model=model, mode="logits") is get_scorer("self", model=model, mode="logits")
    assert SelfScorer.constructions == before + 1
    clear_scorer_cache()
