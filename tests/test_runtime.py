"""The runtime seam: a backend registry, composed options, the typed trace, and a second backend.

``fake_backend`` (beside this file) is a minimal base model over a tiny random Qwen2 with NO ``prefill``:
the co-reasoning path a new backend hits first. Plugging it in takes that module and one registry entry;
it then appears in the lmms-eval manifests, in ``cos run --backend`` and in ``cos report``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fake_backend
import numpy as np
import pytest
import torch

from cos.pipeline import CoSConfig, CoSPipeline, GenerationOptions
from cos.protocol import SupportsPrefill, VideoLM
from cos.scoring import ShotScores, UniformScorer
from cos.trace import TRACE_SCHEMA, CoSTrace
from cos_runtime import registry

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What colour is the shape?\nA. red\nB. green\nC. blue\nD. yellow"


class FixedScorer(UniformScorer):
    """Says yes to the mosaics named in ``decisions`` (a fixed rule, not a model)."""

    name = "fixed"

    def __init__(self, decisions):
        self.decisions = np.asarray(decisions, dtype=np.int64)

    def score(self, mosaics, question):
        assert len(mosaics) == len(self.decisions)
        return ShotScores(self.decisions.astype(float), self.decisions.copy(), [""] * len(mosaics))


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> Path:
    return fake_backend.make_test_checkpoint(tmp_path_factory.mktemp("fake"), seed=0)


def _fake(fake_dir, independent=True):
    return fake_backend.load(fake_backend.Options(pretrained=str(fake_dir), independent_frames=independent), "cpu", torch.float32)


@torch.no_grad()
def _naive(model, streams, alpha, steps, eos):
    """Independent reference: per token, one uncached forward per stream on its own video, fused raw logits."""
    embed = model.lm.get_input_embeddings()
    tokens = []
    for _ in range(steps):
        ext = [s if not tokens else torch.cat([s, embed(torch.tensor([tokens]))], dim=1) for s in streams]
        logits = [model.lm(inputs_embeds=e, use_cache=False).logits[0, -1].float() for e in ext]
        token = int((logits[0] + alpha * (logits[1] - logits[2])).argmax())
        tokens.append(token)
        if token == eos:
            break
    return tokens


def _composed_streams(model, frames, trace: CoSTrace):
    """X, Sp and Sn built from composed FRAMES (not gathered features), each encoded on its own."""
    ids = model.prompt_ids(QUESTION)
    padded = np.concatenate([frames, np.zeros_like(frames[:1])])
    maps = [np.arange(len(frames)), np.array(trace.positive_map), np.array(trace.negative_map)]
    return [model.embed_prompt(ids, model.encode_frames(model.preprocess(padded[m]))) for m in maps]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Eight frames of distinct flat colours, so that every frame changes what the toy encoder sees."""
    colours = np.random.default_rng(3).integers(0, 256, (8, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (8, 32, 32, 3)).copy()


@pytest.mark.parametrize("independent", [True, False], ids=["gathered", "encoded"])
def test_a_backend_without_prefill_matches_the_naive_reference(fake_dir, frames, independent):
    model = _fake(fake_dir, independent)
    assert isinstance(model, VideoLM) and not isinstance(model, SupportsPrefill)
    pipe = CoSPipeline(model, FixedScorer([0, 1, 0, 0]), CoSConfig(shot_size=2))
    result = pipe.answer(frames, QUESTION, gen=GenerationOptions(max_new_tokens=8))
    trace = result.trace
    assert trace.binary_code == [0, 0, 1, 1, 0, 0, 0, 0] and trace.streams == 3 and trace.alpha == 0.75
    assert trace.stream_features == ("gathered" if independent else "encoded")
    assert trace.prefill_shared is None  # no prefill capability: generate ran on the three streams
    want = _naive(model, _composed_streams(model, frames, trace), trace.alpha, len(trace.answer_tokens), fake_backend.EOS)
    assert trace.answer_tokens == want and len(want) >= 4
    x_only = _naive(model, _composed_streams(model, frames, trace)[:1] * 3, 0.0, len(want), fake_backend.EOS)
    assert x_only != want  # the positive and negative videos changed the answer


@pytest.mark.parametrize("stream_times", ["shown", "original"])
def test_a_prompt_that_states_frame_times_states_each_streams_own(fake_dir, frames, stream_times):
    """LLaVA-Video's time instruction: with "shown", Sp and Sn state the times of the frames they show (so the
    three prompts differ in length and the streams are left-padded); with "original", X's times."""
    from cos.protocol import VideoInfo

    model = fake_backend.load(fake_backend.Options(pretrained=str(fake_dir), state_times=True), "cpu", torch.float32)
    video = VideoInfo(frame_indices=tuple(range(0, 80, 10)), fps=2.0, duration=40.0, total_frames=80)  # times 0, 5, ..., 35 s
    pipe = CoSPipeline(model, FixedScorer([0, 1, 0, 0]), CoSConfig(shot_size=2, stream_times=stream_times))
    trace = pipe.answer(frames, QUESTION, gen=GenerationOptions(max_new_tokens=6), video=video).trace
    assert trace.streams == 3 and trace.binary_code == [0, 0, 1, 1, 0, 0, 0, 0]
    shown = [video, video.shown(trace.positive_map), video.shown(trace.negative_map)]
    if stream_times == "original":
        shown = [video] * 3
    prompts = [model.prompt_ids(QUESTION, v) for v in shown]
    assert (len({p.shape[1] for p in prompts}) > 1) == (stream_times == "shown")
    assert video.shown(trace.positive_map).frame_times[0] == 10.0  # Sp's first frame is sampled frame 2 (source frame 20, 10 s)
    padded = np.concatenate([frames, np.zeros_like(frames[:1])])
    maps = [np.arange(len(frames)), np.array(trace.positive_map), np.array(trace.negative_map)]
    streams = [model.embed_prompt(p, model.encode_frames(model.preprocess(padded[m]))) for p, m in zip(prompts, maps)]
    want = _naive(model, streams, trace.alpha, len(trace.answer_tokens), fake_backend.EOS)  # unpadded, one stream at a time
    assert trace.answer_tokens == want


def test_a_backend_is_one_module_and_one_registry_line(tmp_path, fake_dir, needle_data, capsys, monkeypatch):
    from importlib.metadata import entry_points

    from cos_runtime import report
    from cos_runtime.cli import main as cos_main

    registry.register(fake_backend.SPEC)
    try:
        # 1. the lmms-eval entry point's manifests
        (ep,) = [e for e in entry_points(group="lmms_eval.models") if e.value.startswith("cos_lmms_eval.")]
        ids = {m.model_id: m for m in ep.load()()}
        assert {"longva", "cos_longva", "fake_video", "cos_fake_video"} <= set(ids)
        assert ids["cos_fake_video"].simple_class_path == "cos_lmms_eval.models.CoSFakeVideo"
        # 2. cos run --backend fake
        docs = json.loads((needle_data / "questions.json").read_text())
        trace_file = tmp_path / "trace.json"
        rc = cos_main(["run", "--backend", "fake", "--model", str(fake_dir), "--video", str(needle_data / docs[0]["video"]),
                       "--question", QUESTION, "--frames", "8", "--scorer", "uniform", "--max-new-tokens", "3", "--trace", str(trace_file)])
        assert rc == 0
        saved = CoSTrace.from_json(json.loads(trace_file.read_text()))
        assert saved.backend == "fake" and saved.num_frames == 8 and capsys.readouterr().out.splitlines()[0] == saved.answer
        assert cos_main(["run", "--backend", "fake", "--model", str(fake_dir), "--video", "v.mp4", "--question", "q",
                         "--attn-implementation", "eager"]) == 1  # a LongVA option does not apply to this backend
        assert "do not apply to backend 'fake'" in capsys.readouterr().err
        # 3. an lmms-eval run of its CoS model, and the report over it
        from lmms_eval.models import MODEL_REGISTRY_V2

        MODEL_REGISTRY_V2.load_entrypoint_manifests(overwrite=True)  # what lmms-eval does at start-up
        tasks = tmp_path / "tasks" / "cos_needle"
        shutil.copytree(REPO / "lmms-eval" / "cos_lmms_eval" / "tasks" / "cos_needle", tasks, ignore=shutil.ignore_patterns("data", "__pycache__"))
        shutil.copytree(needle_data, tasks / "data")
        out, traces = tmp_path / "logs", tmp_path / "traces"
        from lmms_eval.__main__ import cli_evaluate

        monkeypatch.setattr(sys, "argv", ["lmms_eval", "--model", "cos_fake_video", "--model_args",
                                          f"pretrained={fake_dir},max_frames_num=8,scorer=self,score_mode=logits,trace_dir={traces}",
                                          "--tasks", "cos_needle", "--include_path", str(tasks.parent), "--batch_size", "1",
                                          "--log_samples", "--output_path", str(out), "--verbosity", "WARNING"])
        cli_evaluate()
        runs, _ = report.load_runs(out)
        (run,) = runs
        assert run.model == "cos_fake_video" and run.expected_method == "cos"
        samples = run.all_samples()
        assert len(samples) == len(docs) and all(s.trace is not None and s.trace.backend == "fake" for s in samples)
        (row,) = report.summary_rows(runs)
        assert row["model"] == "cos_fake_video" and row["n"] == len(docs) and row["failed"] == 0
        assert report.build_report(out, tmp_path / "report.html", strips=False).is_file()
    finally:
        registry.unregister("fake")
    assert "fake" not in registry.names()


def test_a_backend_from_another_package_reaches_every_process(tmp_path, fake_dir, needle_data):
    """The ``cos.backends`` entry point group: a fresh process (as accelerate's workers are) sees the backend."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(Path(__file__).with_name("fake_backend.py"), site / "fake_backend.py")
    (site / "fake_cos_spec.py").write_text(  # the declaration, in a torch-free module
        "from cos_runtime.registry import BackendSpec\n"
        "SPEC = BackendSpec(name='fake', module='fake_backend', baseline_model='fake_video', cos_model='cos_fake_video',"
        " class_name='FakeVideo')\n")
    dist = site / "fake_cos_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-cos-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cos.backends]\nfake = fake_cos_spec:SPEC\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    docs = json.loads((needle_data / "questions.json").read_text())
    code = ("import sys, cos_lmms_eval.registration as r; from cos_runtime import registry;"
            "print(sorted(registry.names())); print(sorted(m.model_id for m in r.manifests()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=300).stdout.splitlines()
    assert "'fake'" in out[0] and "'cos_fake_video'" in out[1] and "'fake_video'" in out[1]
    proc = subprocess.run([sys.executable, "-m", "cos_runtime", "run", "--backend", "fake", "--model", str(fake_dir), "--video",
                           str(needle_data / docs[0]["video"]), "--question", QUESTION, "--frames", "8", "--scorer", "uniform",
                           "--max-new-tokens", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- options
def test_options_are_composed_and_each_name_is_declared_once():
    from cos.compose import ORDER_CHOICES
    from cos.errors import ConfigError
    from cos.shots import LEFTOVER_CHOICES
    from cos_runtime.options import ModelOptions

    opts = ModelOptions.parse("longva", "cos", {"max_frames_num": "16", "shot_size": 2, "alpha": "0.5", "torch_dtype": "float32"})
    assert opts.backend.max_frames_num == 16 and opts.cos.shot_size == 2 and opts.cos.alpha == 0.5 and opts.run.torch_dtype == "float32"
    assert opts.max_frames_num == 16  # read-through to the one group that declares it
    with pytest.raises(ConfigError, match=rf"leftover='keep': expected one of {list(LEFTOVER_CHOICES)!r}".replace("[", r"\[")):
        ModelOptions.parse("longva", "cos", {"leftover": "keep"})
    with pytest.raises(ConfigError, match="negative_order='up'") as info:
        ModelOptions.parse("longva", "cos", {"negative_order": "up"})
    assert str(list(ORDER_CHOICES)) in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown model_args \['shot_size'\]"):
        ModelOptions.parse("longva", "uniform", {"shot_size": 2})  # the baseline has no method options
    # identity: what changes an answer, not where it runs
    a = ModelOptions.parse("longva", "cos", {"device": "cuda:0", "trace_dir": "/a", "scorer_batch_size": 4}).identity()
    b = ModelOptions.parse("longva", "cos", {"device": "cuda:1", "trace_dir": "/b"}).identity()
    assert a == b and a["backend"] == "longva" and a["method"] == "cos"
    assert ModelOptions.parse("longva", "cos", {"alpha": 0.3}).identity() != b


def test_cos_run_flags_are_generated_from_the_option_fields():
    out = subprocess.run([sys.executable, "-m", "cos_runtime", "run", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--max-frames-num", "--frames", "--video-decode-backend", "--decoder", "--shot-size", "--leftover", "--negative-order",
                 "--share-prefix", "--alpha", "--scorer", "--scorer-pretrained", "--score-mode", "--score-threshold", "--torch-dtype",
                 "--backend"):
        assert flag in out, flag
    assert "--backend {longva,llava_video,videoxl}" in out  # the choices come from the registry


# ------------------------------------------------------------------------------------------------ trace
def test_trace_round_trips_and_refuses_unknown_fields(tmp_path):
    from cos.trace import read_trace, write_trace

    trace = CoSTrace(method="cos", question="q", frame_indices=[0, 5], num_frames=2, binary_code=[1, 0], positive_map=[0, 0],
                     negative_map=[1, 1], alpha=0.5, answer="A", answer_tokens=[np.int64(32)], timings={"total": 1.5})
    path = write_trace(trace, tmp_path / "t.json")
    data = json.loads(path.read_text())
    assert data["schema"] == TRACE_SCHEMA and data["answer_tokens"] == [32]
    assert read_trace(path) == CoSTrace.from_json(data) and read_trace(path).to_json() == data
    with pytest.raises(AttributeError, match="no field"):
        trace.update(alhpa=0.1)
    old = {k: v for k, v in data.items() if k not in ("schema", "backend", "stream_features")}
    old["some_old_key"] = 1  # a trace written before the schema existed still reads
    assert CoSTrace.from_json(old).schema == 0 and CoSTrace.from_json(old).alpha == 0.5
    with pytest.raises(ValueError, match="newer"):
        CoSTrace.from_json({**data, "schema": TRACE_SCHEMA + 1})


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_run_config_names_a_registered_model_and_valid_model_args(path):
    """The YAML configs the scripts take: their model id resolves to a backend and method, and their
    model_args parse (as lmms-eval splits them) into that model's options."""
    import yaml
    from lmms_eval.utils import simple_parse_args_string

    from cos_runtime import registry
    from cos_runtime.options import ModelOptions

    loaded = yaml.safe_load(path.read_text())
    for config in loaded if isinstance(loaded, list) else [loaded]:  # a list: models run one after the other
        resolved = registry.resolve_model_id(config["model"])
        assert resolved is not None, config["model"]
        spec, method = resolved
        opts = ModelOptions.parse(spec.name, method, simple_parse_args_string(config["model_args"]))
        assert opts.backend.pretrained and opts.backend.max_frames_num >= 1
