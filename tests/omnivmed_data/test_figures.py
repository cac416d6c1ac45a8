"""Data-card figures: real PNGs, one wedge per modality and task, same statistics -> same bytes."""

import io
from collections import Counter

from PIL import Image

from omnivmed.data.card_stats import CardStats
from omnivmed.data.figures import frames_per_sample, modalities_tasks, token_lengths, write_figures


def stats(extra_ct: int = 0) -> CardStats:
    return CardStats(
        name="fig",
        rows=60 + extra_ct,
        counts={
            "modality": {"ct": 30 + extra_ct, "mri": 20, "endoscopy": 10},
            "task": {"vqa": 40 + extra_ct, "report_generation": 10, "surgical_vqa": 10},
        },
        tokens=Counter({12: 20, 40: 30, 300: 10 + extra_ct}),
        frames={"image": Counter({1: 40}), "volume": Counter({32: 10}), "video": Counter({8: 10 + extra_ct})},
    )


def test_three_pngs_are_written_and_reproducible(tmp_path):
    paths = write_figures(stats(), tmp_path / "a")
    again = write_figures(stats(), tmp_path / "b")
    assert set(paths) == {"modalities_tasks", "token_lengths", "frames_per_sample"}
    for name, path in paths.items():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = Image.open(io.BytesIO(data))
        assert image.width >= 600 and image.height >= 400
        assert data == again[name].read_bytes()
    changed = write_figures(stats(extra_ct=25), tmp_path / "c")
    assert changed["modalities_tasks"].read_bytes() != paths["modalities_tasks"].read_bytes()


def test_rings_have_one_wedge_per_value_with_counts_in_the_legend():
    figure = modalities_tasks(stats())
    rings = [ax for ax in figure.axes if ax.patches]
    assert [len(ax.patches) for ax in rings] == [3, 3]
    legend = [t.get_text() for t in rings[0].get_legend().get_texts()]
    assert legend[0] == "ct: 30 (50.0%)" and legend[-1] == "endoscopy: 10 (16.7%)"


def test_histograms_weigh_by_sample_counts():
    bars = token_lengths(stats()).axes[0].patches
    assert round(sum(b.get_height() for b in bars)) == 60
    frames = frames_per_sample(stats()).axes[0]
    heights = {round(b.get_x() + b.get_width() / 2): b.get_height() for b in frames.patches}
    assert sorted(heights.values()) == [10, 10, 40]
    assert [t.get_text() for t in frames.get_legend().get_texts()] == ["image", "video", "volume"]


def test_empty_statistics_still_draw(tmp_path):
    empty = CardStats(name="empty", rows=0, counts={})
    assert all(p.is_file() for p in write_figures(empty, tmp_path).values())
