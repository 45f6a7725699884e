"""``cos run``: answer one question about one video, print the answer, write the trace.

Uses the same :class:`~cos_lmms_eval.engine.Engine` as the lmms-eval models, so a sample answered here
is answered the same way inside an evaluation run.
"""

from __future__ import annotations

import json

from cos.pipeline import GenerationOptions
from cos.trace import write_trace
from cos_lmms_eval.options import CoSLongVAOptions, LongVAOptions


def run_command(args) -> int:
    from cos_lmms_eval.engine import Engine

    common = dict(pretrained=args.model, max_frames_num=args.frames, video_decode_backend=args.backend,
                  device=args.device, torch_dtype=args.dtype, attn_implementation=args.attn_implementation)
    if args.method == "uniform":
        opts = LongVAOptions(**common)
    else:
        opts = CoSLongVAOptions(**common, scorer=args.scorer, scorer_pretrained=args.scorer_model, score_mode=args.score_mode,
                                score_threshold=args.threshold, shot_size=args.shot_size, alpha=args.alpha,
                                scorer_load_in_4bit=args.scorer_4bit)
    engine = Engine(opts)
    result = engine.answer(args.video, args.question, GenerationOptions(max_new_tokens=args.max_new_tokens))
    print(result.text)
    if args.trace:
        write_trace(result.trace, args.trace)
        print(f"trace written to {args.trace}")
    if args.verbose:
        keys = ("alpha", "binary_code", "positive_map", "negative_map", "timings")
        print(json.dumps({k: result.trace.get(k) for k in keys}))
    return 0


def add_parser(subparsers):
    p = subparsers.add_parser("run", help="answer a question about a video (CoS or the uniform baseline)", allow_abbrev=False)
    p.add_argument("--model", required=True, help="LongVA checkpoint directory or hub id (e.g. lmms-lab/LongVA-7B)")
    p.add_argument("--video", required=True, help="video file")
    p.add_argument("--question", required=True)
    p.add_argument("--method", choices=["cos", "uniform"], default="cos")
    p.add_argument("--frames", type=int, default=128, help="frames sampled uniformly (default 128)")
    p.add_argument("--scorer", choices=["llava", "self", "uniform"], default="llava")
    p.add_argument("--scorer-model", default="llava-hf/llava-1.5-13b-hf", help="LLaVA scorer checkpoint (scorer=llava)")
    p.add_argument("--scorer-4bit", action="store_true", help="load the LLaVA scorer in 4 bit (GPU + bitsandbytes)")
    p.add_argument("--score-mode", choices=["generate", "logits"], default="generate")
    p.add_argument("--threshold", type=float, default=0.5, help="P(yes) threshold in logits mode")
    p.add_argument("--shot-size", type=int, default=4)
    p.add_argument("--alpha", default="auto", help="'auto' (Eq. 9) or a fixed number")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--backend", choices=["decord", "pyav", "auto"], default="auto", help="video decoder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16/fp16 on GPU), float32, float16, bfloat16")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--trace", default=None, help="write the per-sample trace (JSON) here")
    p.add_argument("--verbose", action="store_true", help="also print α, the binary code, the maps and timings")
    p.set_defaults(func=run_command)
    return p
