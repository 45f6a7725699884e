"""Local fixtures for the paper's benchmarks, laid out where lmms-eval's own task code looks for them.

The test tasks in ``tests/tasks/`` are lmms-eval's real tasks with local documents; their videos are
copies of the synthetic needle videos (real H.264) placed under ``$HF_HOME`` at the paths the real
``doc_to_visual`` functions build, with one non-ASCII file name per benchmark, one document per
benchmark whose video is missing, a Video-MME subtitle file, and an MVBench clip stored as a folder of
frame images (as MVBench's episodic-reasoning clips are).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

#: test task -> the lmms-eval task it copies (for a group: the group)
REAL_TASK = {
    "cos_test_videomme": "videomme",
    "cos_test_videomme_w_subtitle": "videomme_w_subtitle",
    "cos_test_mlvu_dev": "mlvu_dev",
    "cos_test_longvideobench_val_v": "longvideobench_val_v",
    "cos_test_nextqa_mc_test": "nextqa_mc_test",
    "cos_test_mvbench": "mvbench",
}
#: sub-tasks of a test group -> their real sub-task
SUBTASKS = {
    "cos_test_mvbench": {f"cos_test_mvbench_{s}": f"mvbench_{s}" for s in ("action_antonym", "fine_grained_pose", "episodic_reasoning")},
}

#: file under $HF_HOME -> index of the needle video it is a copy of
VIDEOS = {
    "videomme/data/fixture_videomme_001.mp4": 0,
    "videomme/data/vidéo_雪_002.mp4": 1,
    "mlvu/fixture_mlvu_needle.mp4": 2,
    "mlvu/映画_plot_002.mp4": 3,
    "datasets/longvideobench/videos/fixture_lvb_0.mp4": 0,
    "datasets/longvideobench/videos/видео_lvb_1.mp4": 1,
    "nextqa/NExTVideo/4010069381.mp4": 2,
    "nextqa/NExTVideo/vídeo_5.mp4": 3,
    "mvbench_video/ssv2_video_mp4/fixture_ssv2_0.mp4": 0,
    "mvbench_video/ssv2_video_mp4/ssv2_ünïcode_1.mp4": 1,
    "mvbench_video/nturgbd_convert/S001C001P001R001A001_rgb.mp4": 2,
}
#: folder under $HF_HOME -> index of the needle video whose frames it holds (as numbered JPEGs)
FRAME_FOLDERS = {"mvbench_video/tvqa/video_fps3_hq_segment/fixture_tvqa_clip_0": 3}

SUBTITLE_LINES = ("A red shape is about to appear.", "Now it is gone — ¿verdad?")
SUBTITLES = {
    "videomme/subtitle/fixture_videomme_001.srt": (
        "1\n00:00:00,000 --> 00:00:03,000\n"
        f'<font color="white" size=".72c">{SUBTITLE_LINES[0]}</font>\n\n'
        "2\n00:00:03,000 --> 00:00:07,500\n"
        f'<font color="white" size=".72c">{SUBTITLE_LINES[1]}</font>\n\n'
    ),
}

#: test task -> doc ids whose video is missing (each must become an error record, not a crash)
MISSING = {
    "cos_test_videomme": [3],
    "cos_test_videomme_w_subtitle": [3],
    "cos_test_mlvu_dev": [2],
    "cos_test_longvideobench_val_v": [2],
    "cos_test_nextqa_mc_test": [2],
    "cos_test_mvbench_fine_grained_pose": [1],
}


def leaf_tasks() -> list[str]:
    """The test tasks that hold documents (groups replaced by their sub-tasks)."""
    out = []
    for task in REAL_TASK:
        out.extend(SUBTASKS.get(task, {task: None}))
    return out


def docs(task: str) -> list[dict]:
    """The documents of a leaf test task, in doc-id order."""
    data_files = {
        "cos_test_videomme": "cos_test_videomme/docs.jsonl",
        "cos_test_videomme_w_subtitle": "cos_test_videomme/docs.jsonl",
        "cos_test_mlvu_dev": "cos_test_mlvu/docs.jsonl",
        "cos_test_longvideobench_val_v": "cos_test_longvideobench/docs.jsonl",
        "cos_test_nextqa_mc_test": "cos_test_nextqa/docs.jsonl",
    }
    rel = data_files.get(task) or f"cos_test_mvbench/{task.removeprefix('cos_test_mvbench_')}.jsonl"
    return [json.loads(line) for line in (TASKS_DIR / rel).read_text(encoding="utf-8").splitlines() if line.strip()]


def lay_out(hf_home: str | Path, needle_dir: str | Path) -> Path:
    """Copy the needle videos (``needle_dir``, as written by ``cos make-needle-videos``) to the benchmark paths."""
    hf_home, needle_dir = Path(hf_home), Path(needle_dir)
    records = json.loads((needle_dir / "questions.json").read_text())
    for rel, index in VIDEOS.items():
        target = hf_home / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(needle_dir / records[index]["video"], target)
    for rel, index in FRAME_FOLDERS.items():
        from PIL import Image

        from cos.video import sample_frames

        target = hf_home / rel
        target.mkdir(parents=True, exist_ok=True)
        video = sample_frames(needle_dir / records[index]["video"], records[index]["num_frames"], backend="pyav")
        for i, frame in enumerate(video.frames, start=1):
            Image.fromarray(frame).save(target / f"{i:05d}.jpg", quality=95)
    for rel, text in SUBTITLES.items():
        target = hf_home / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return hf_home
