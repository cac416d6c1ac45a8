"""QA trees in the three real surgical layouts, with frames that show their own index.

Frame folders hold index frames (tests/support/video_files.py) named as the
sources name them; QA text files hold ``question|answer`` (or
``keyframe|question|answer``) lines with answers from the anchors' classes.
"""

from __future__ import annotations

from pathlib import Path

from support.video_files import write_index_frames, write_index_video

SIZE = (96, 128)
STEP = 25  # Cholec80-VQA frame folders: one frame per second of the 25 fps video


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def make_cholec80_tree(raw: Path, *, videos: tuple[int, ...] = (1, 5), n_frames: int = 16, with_videos: bool = False) -> Path:
    """Videos 1 (train) and 5 (validation): frames 0, 25, ..., QA on frames 100, 200, 300 (multiples of
    100, kept) and 150 (dropped by the anchors' rule), both variants."""
    root = raw / "Cholec80-VQA"
    for video in videos:
        # The videos' frames look alike (index frames), so their answers differ: else deduplication
        # would rightly keep one copy.
        phase = "preparation" if video == 1 else "clipping cutting"
        write_index_frames(root / "cropped_image" / str(video), range(0, n_frames * STEP, STEP), size=SIZE)
        write_lines(root / "Classification" / str(video) / "100.txt", [f"what is the phase of image?|{phase}", f"is grasper used?|{'yes' if video == 1 else 'no'}"])
        write_lines(root / "Classification" / str(video) / "200.txt", [f"how many tools are operating?|{1 + (video == 5)}"])
        write_lines(root / "Classification" / str(video) / "300.txt", [f"what is the phase of image?|{'calot triangle dissection' if video == 1 else 'gallbladder packaging'}"])
        write_lines(root / "Classification" / str(video) / "150.txt", [f"what is the phase of image?|{phase}"])
        write_lines(root / "Sentence" / str(video) / "200.txt", [f"what are the tools operating?|grasper and hook are operating in video {video}"])
        if with_videos:
            # Video 5 shows indices from 1000 on, so the two videos differ in every frame.
            first = 0 if video == 1 else 1000
            write_index_video(raw / "videos" / f"video{video:02d}.mp4", n_frames * STEP, codec="libx264", fps=25, size=SIZE, gop=25, first_index=first)
    return raw


def make_endovis18_tree(raw: Path) -> Path:
    """seq_1 (validation), seq_2 (train), seq_8 (in neither list); frames frame000.png ... frame011.png."""
    root = raw / "EndoVis-18-VQA"
    for seq in ("seq_1", "seq_2", "seq_8"):
        state, place = ("Grasping", "left-top") if seq == "seq_1" else ("Cutting", "right-bottom")
        write_index_frames(root / seq / "left_frames", range(12), name="frame{:03d}.png", size=SIZE)
        write_lines(
            root / seq / "vqa" / "Classification" / "frame005_QA.txt",
            [f"what organ is being operated in {seq}?|kidney", f"what is the state of bipolar_forceps?|{state}", f"where is bipolar_forceps located?|{place}"],
        )
        write_lines(root / seq / "vqa" / "Sentence" / "frame009_QA.txt", [f"what is bipolar_forceps doing?|bipolar forceps is {state.lower()} in {seq}"])
    return raw


def make_psiava_tree(raw: Path) -> Path:
    """CASE001 keyframes 00000.jpg, 00030.jpg, ... (every 30th frame); Train and Val question files."""
    root = raw / "PSI-AVA-VQA"
    write_index_frames(root / "keyframes" / "CASE001", range(0, 300, 30), name="{:05d}.jpg", size=SIZE)
    write_index_frames(root / "keyframes" / "CASE002", range(0, 300, 30), name="{:05d}.jpg", size=SIZE)
    write_lines(root / "Train" / "C1_location.txt", ["CASE001/00090.jpg|where is the needle driver?|top left"])
    write_lines(root / "Train" / "C2_action.txt", ["CASE001/00090.jpg|what is the needle driver doing?|['Grasp', 'Hold']"])
    write_lines(root / "Train" / "C3_phase.txt", ["CASE001/00150.jpg|what is the phase?|LPAD"])
    write_lines(root / "Train" / "C4_step.txt", ["CASE001/00150.jpg|what is the step?|Corte"])
    write_lines(root / "Val" / "C3_phase.txt", ["CASE002/00240.jpg|what is the phase?|Tiempo_muerto"])
    return raw
