"""The preview page: self-contained HTML, checked in a real headless Chromium (Debian's /usr/bin/chromium)."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support.staged_sources import write_staged
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.data.manifest import Manifest
from omnivmed.data.mix import plan_mix, run_mix
from omnivmed.data.preview import preview_positions, write_preview
from omnivmed.data.recipe import load_recipe
from omnivmed.data.shards import iter_samples

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """A mix holding images (6), volumes (5), videos (2) and multi-image samples (3)."""
    tmp = tmp_path_factory.mktemp("preview")
    staged = tmp / "staged"
    write_staged(staged, "pics", {("train", "vqa", "x_ray"): 6})
    write_staged(staged, "scans", {("train", "report_generation", "ct"): 5}, kind="volume")
    write_staged(staged, "clips", {("train", "phase_recognition", "endoscopy"): 2}, kind="video")
    write_staged(staged, "panels", {("train", "image_caption", "pathology"): 3}, kind="multi_image")
    recipe = tmp / "p.yaml"
    recipe.write_text("name: prev\nseed: 2\nsources:\n  pics: {take: all}\n  scans: {take: all}\n  clips: {take: all}\n  panels: {take: all}\n")
    return run_mix(plan_mix(load_recipe(recipe), staged), tmp / "out", progress=False).manifest_path


def payload(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="omnivmed-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_page_is_self_contained_with_up_to_k_per_kind(mixed, tmp_path):
    out = tmp_path / "p.html"
    shown = write_preview(mixed, out, per_kind=4)
    html = out.read_text()
    data = payload(html)
    kinds = [s["visual_kind"] for s in data["samples"]]
    assert shown == len(kinds) == 4 + 4 + 2 + 3
    assert kinds.count("image") == 4 and kinds.count("volume") == 4 and kinds.count("video") == 2
    assert all(f.startswith("data:image/jpeg;base64,") for s in data["samples"] for f in s["frames"])
    volume = next(s for s in data["samples"] if s["visual_kind"] == "volume")
    assert len(volume["frames"]) == 6 and volume["labels"][1] == "slice 1"
    video = next(s for s in data["samples"] if s["visual_kind"] == "video")
    assert video["fps"] == 5.0 and video["labels"][2] == "t=0.40 s"
    assert video["provenance"]["license"] == "CC0-1.0" and video["conversations"][0]["role"] == "user"
    # nothing is fetched: no http(s) URL in any src or href
    assert not re.search(r'(src|href)="https?:', html)
    again = tmp_path / "q.html"
    write_preview(mixed, again, per_kind=4)
    assert again.read_bytes() == out.read_bytes()


def test_draw_is_seeded(mixed):
    manifest = Manifest.load(mixed)
    kind_at = {
        (i, row): sample.visual_kind
        for i, shard in enumerate(manifest.shards)
        for row, sample in enumerate(iter_samples(mixed.parent / shard.path))
    }
    a = preview_positions(mixed, manifest, 2, seed=1)
    # two of each kind (both videos: there are only two), each a real row of that kind, none twice
    assert Counter(kind_at[p] for p in a) == {"image": 2, "multi_image": 2, "volume": 2, "video": 2}
    assert len(set(a)) == len(a)
    np.random.random(7)  # whatever global random state the process is in...
    assert a == preview_positions(mixed, manifest, 2, seed=1)  # ...the seed alone decides the draw
    assert a != preview_positions(mixed, manifest, 2, seed=3)


def test_text_that_closes_a_script_cannot_break_the_page(tmp_path):
    from omnivmed.data.preview import render_page

    html = render_page("t", {"samples": [{"text": "</script><script>alert(1)</script>"}], "rows": 1, "note": ""})
    assert payload(html)["samples"][0]["text"] == "</script><script>alert(1)</script>"
    assert html.count("</script>") == 2  # the data block's and the page script's


def test_cli_preview_writes_beside_the_manifest(mixed):
    result = CliRunner().invoke(app, ["preview", str(mixed), "--per-kind", "1"])
    assert result.exit_code == 0, result.output
    assert "4 samples" in result.output and (mixed.parent / "preview.html").is_file()
    missing = CliRunner().invoke(app, ["preview", str(mixed.parent / "nope.json")])
    assert missing.exit_code == 2 and "no such manifest" in missing.output


@pytest.mark.slow
def test_page_renders_in_headless_chromium(mixed, tmp_path):
    # Debian's browser is a system package (.ci/run installs it); playwright is a test dependency:
    # without it the import fails, it is never skipped.
    from playwright import sync_api

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package to run the browser test")
    page_file = tmp_path / "preview.html"
    shown = write_preview(mixed, page_file, per_kind=4)
    screenshot = tmp_path / "preview.png"
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(page_file.as_uri())
            page.wait_for_selector("body[data-rendered]")
            assert page.locator("article.sample").count() == shown == 13
            assert page.locator("article.sample[data-kind=volume]").count() == 4
            assert page.locator("article.sample[data-kind=video]").count() == 2
            assert page.locator("article.sample[data-kind=multi_image] .multi img").count() == 3 * 2
            # every image decoded (a broken data URI has naturalWidth 0)
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            # scrub a volume: the slider moves the shown slice
            volume = page.locator("article.sample[data-kind=volume]").first
            first_src = volume.locator("img.main").get_attribute("src")
            volume.locator("input.scrub").fill("3")
            assert volume.locator(".position").inner_text().startswith("4 / 6")
            assert volume.locator("img.main").get_attribute("src") != first_src
            volume.locator(".strip img").nth(5).click()
            assert volume.locator(".position").inner_text().startswith("6 / 6")
            # play a video: its frame advances on its own
            video = page.locator("article.sample[data-kind=video]").first
            video.locator("button.play").click()
            page.wait_for_function(
                "el => el.dataset.index !== '0'", arg=video.locator("img.main").element_handle(), timeout=5000
            )
            assert "Pause" in video.locator("button.play").inner_text()
            assert "13 samples shown of 16" in page.locator("#summary").inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
