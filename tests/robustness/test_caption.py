"""Captioning when things go wrong: an endpoint that is down or wants a key, requests that fail,
replies that never parse, a run that accepts nothing (issue 15, item 4), and the demo's progress."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from support.caption_fixtures import captioned_recipe
import yaml
from typer.testing import CliRunner

from omnivmed.cli.data import app
from omnivmed.rejection_sampling.cache import ReplyCache
from omnivmed.rejection_sampling.clip_inputs import read_clips
from omnivmed.rejection_sampling.prompts import clip_header
from omnivmed.rejection_sampling.preflight import EndpointRefused, EndpointUnreachable, preflight
from omnivmed.rejection_sampling.requester import FailureKey, RequestEvent
from omnivmed.rejection_sampling.run import caption_run
from omnivmed.rejection_sampling.server import Drop, HttpError, LocalServer, Reply, echo_responder
from support.caption_fixtures import Script, caption_config, is_judge, make_windows

runner = CliRunner()
UNSET = "OMNIVMED_TEST_CAPTION_KEY_UNSET"


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return make_windows(tmp_path_factory.mktemp("robust-windows"), step=8)  # 4 clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def config_file(path: Path, base_url: str, **extra) -> Path:
    def ep(name):
        return {"name": name, "base_url": base_url, "model": f"model-{name}", "api_key_env": None,
                "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5.0, **extra}

    config = {"generator": ep("gen"), "judges": [{**ep("vision"), "kind": "multimodal"}, {**ep("text"), "kind": "text"}],
              "candidates": 2, "extra_rounds": 1}
    path.write_text(yaml.safe_dump(config))
    return path


def caption(windows, out, config, *extra):
    return runner.invoke(app, ["caption", "--windows", str(windows), "--out", str(out), "--config", str(config), "--no-progress", *map(str, extra)])


def one_line(text: str) -> str:
    return " ".join(text.split())


# -- pre-flight ------------------------------------------------------------------


def test_endpoint_down_is_one_line_at_once_naming_url_and_error_class(windows, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = config_file(tmp_path / "c.yaml", url, max_retries=5, backoff_s=1.0)  # 5 retries would take 30 s or more
    started = time.perf_counter()
    result = caption(windows, tmp_path / "out", config)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 1
    text = one_line(result.output)
    assert url in text and "ConnectError" in text and "nothing was sent" in text
    assert "Traceback" not in result.output and elapsed < 10
    assert not (tmp_path / "out").exists()  # nothing written, not even the cache


def test_endpoint_down_after_a_finished_run_writes_the_outputs_from_the_cache(windows, tmp_path):
    out = tmp_path / "out"
    with LocalServer(Script()) as server:
        assert caption(windows, out, config_file(tmp_path / "up.yaml", server.base_url)).exit_code == 0
    finished = {name: (out / name).read_bytes() for name in ("candidates.arrow", "manifest.json", "summary.json")}
    down = f"http://127.0.0.1:{free_port()}/v1"
    result = caption(windows, out, config_file(tmp_path / "down.yaml", down))
    assert result.exit_code == 0, result.output
    assert "is unreachable" in result.output and "every request is in the cache" in one_line(result.output)
    assert {name: (out / name).read_bytes() for name in finished} == finished
    # One more clip than the cache holds: the endpoint is needed, so it is an error again.
    partial = tmp_path / "partial"
    with LocalServer(Script()) as server:
        assert caption(windows, partial, config_file(tmp_path / "up.yaml", server.base_url), "--limit", "2").exit_code == 0
    result = caption(windows, partial, config_file(tmp_path / "down.yaml", down), "--limit", "3")
    assert result.exit_code == 1 and "nothing was sent" in one_line(result.output)


def test_preflight_checks_each_url_once_and_every_endpoint(monkeypatch):
    with LocalServer(Script()) as up:
        down = f"http://127.0.0.1:{free_port()}/v1"
        config = caption_config(up.base_url)
        assert preflight(config) == []
        judges = (config.judges[0], config.judges[1].__class__(config.judges[1].endpoint.__class__(
            **{**config.judges[1].endpoint.__dict__, "base_url": down}), kind="text"))
        with pytest.raises(EndpointUnreachable, match=f"endpoint text at {down} is unreachable: ConnectError"):
            preflight(config.with_overrides(judges=judges))


def test_unset_key_variable_is_a_warning_when_the_endpoint_takes_no_key(windows, tmp_path, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    with LocalServer(Script(scores=lambda seed, judge: (5, 5, 5))) as server:
        config = config_file(tmp_path / "c.yaml", server.base_url, api_key_env=UNSET)
        result = caption(windows, tmp_path / "out", config, "--limit", "1")
    text = one_line(result.output)
    assert text.count(f"${UNSET} is not set") == 1 and f"gen at {server.base_url}, vision at" in text
    assert result.exit_code == 0, result.output


def test_unset_key_variable_is_an_error_when_the_endpoint_answers_401(windows, tmp_path, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    with LocalServer(Script(), api_key="sk-needed") as server:
        config = config_file(tmp_path / "c.yaml", server.base_url, api_key_env=UNSET)
        result = caption(windows, tmp_path / "out", config)
        assert result.exit_code == 1
        assert f"answered 401: it wants a key, and ${UNSET} is not set" in one_line(result.output)
        assert server.keys(None) == [None]  # one GET /models, no chat request
        monkeypatch.setenv(UNSET, "sk-wrong")
        with pytest.raises(EndpointRefused, match=f"refused the key from \\${UNSET}"):
            preflight(caption_config(server.base_url, api_key_env=UNSET))
        monkeypatch.setenv(UNSET, "sk-needed")
        assert preflight(caption_config(server.base_url, api_key_env=UNSET)) == []
    assert "sk-needed" not in result.output


def test_dry_run_and_batch_write_need_no_endpoint(windows, tmp_path):
    config = config_file(tmp_path / "c.yaml", f"http://127.0.0.1:{free_port()}/v1")
    assert caption(windows, tmp_path / "out", config, "--dry-run").exit_code == 0
    batch = caption(windows, tmp_path / "out", config, "--batch-write", tmp_path / "batch")
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "batch" / "gen.jsonl").is_file()


# -- failed requests ----------------------------------------------------------


def doomed_clip_faults(windows, fault):
    """``fault`` for every caption request of the first clip (the others go through)."""
    header = clip_header(read_clips(windows)[0][0])

    def faults(key, body, seen):
        if not is_judge(body) and header in json.dumps(body["messages"]):
            return fault
        return None

    return faults


@pytest.mark.parametrize("fault, kind, error", [(HttpError(503), "http_503", "HTTP 503"), (Drop(), "connection", None)])
def test_failed_clips_exit_1_naming_the_endpoint_and_the_error(windows, tmp_path, fault, kind, error):
    with LocalServer(Script(faults=doomed_clip_faults(windows, fault))) as server:
        config = config_file(tmp_path / "c.yaml", server.base_url, max_retries=1)
        result = caption(windows, tmp_path / "out", config)
    text = one_line(result.output)
    assert result.exit_code == 1, result.output
    assert "1 of 4 clips failed" in text and f"1 x gen at {server.base_url}: {kind} (" in text
    if error:
        assert f"{kind} ({error})" in text
    assert "request failed: gen at" in text  # said when it happened
    assert "clips failed (requests got no reply after every retry):" in text and "failed requests:" in text
    assert "Traceback" not in result.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["failures"] and run["failures"][0]["endpoint"] == "gen" and run["failures"][0]["kind"] == kind


def test_failures_are_recorded_once_per_request(windows, tmp_path):
    """Unparseable judge replies (cached: they were paid for) and a request that fails for good:
    the first run records each once; re-runs add no parse failure again, only the new transport
    failure of the request they asked again."""

    def faults(key, body, seen):
        if is_judge(body) and body["model"] == "model-vision" and int(key[:8], 16) % 3 == 0:
            return Reply("not JSON at all", 10, 5)
        return None

    doomed = doomed_clip_faults(windows, HttpError(500))
    script = Script(faults=lambda key, body, seen: doomed(key, body, seen) or faults(key, body, seen))
    out = tmp_path / "out"
    with LocalServer(script) as server:
        config = caption_config(server.base_url, max_retries=0)
        caption_run(windows, out, config)
        with ReplyCache(out / "requests.sqlite") as cache:
            first = cache.failures()
        parse = [f for f in first if f["kind"] == "parse"]
        transport = [f for f in first if f["kind"] != "parse"]
        assert parse and transport
        assert len({f["key"] for f in parse}) == len(parse) and len({f["key"] for f in transport}) == len(transport)
        caption_run(windows, out, config)
        caption_run(windows, out, config)
    with ReplyCache(out / "requests.sqlite") as cache:
        after = cache.failures()
    assert [f for f in after if f["kind"] == "parse"] == parse
    again = [f for f in after if f["kind"] != "parse"]
    assert {f["run"] for f in again} == {1, 2, 3} and len(again) == 3 * len(transport)


# -- nothing accepted ----------------------------------------------------------


def test_a_run_that_accepts_nothing_writes_no_manifest_and_exits_1(windows, tmp_path):
    out = tmp_path / "out"
    with LocalServer(Script()) as server:
        good = caption(windows, out, config_file(tmp_path / "c.yaml", server.base_url))
        assert good.exit_code == 0 and (out / "manifest.json").is_file()
    # Other judges (another config: another cache key), all of them harsh: nothing passes.
    with LocalServer(Script(scores=lambda seed, judge: (1, 2, 1))) as server:
        config = config_file(tmp_path / "harsh.yaml", server.base_url)
        config.write_text(config.read_text().replace("model-vision", "model-harsh-vision"))
        result = caption(windows, out, config)
    assert result.exit_code == 1
    text = one_line(result.output)
    assert "nothing accepted (no_passing_candidate 4)" in text and "does not count as staged" in text
    assert not (out / "manifest.json").exists() and not list(out.glob("*/*.arrow"))  # the earlier run's are gone
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"no_passing_candidate"} and len(rejects) == 4
    assert (out / "summary.json").is_file() and (out / "candidates.arrow").is_file()
    verify = runner.invoke(app, ["verify", str(out / "manifest.json")])
    assert verify.exit_code != 0


CAPTION_RECIPE = captioned_recipe(step=8)


def test_instruct_dataset_keeps_a_0_sample_caption_output_missing(tmp_path):
    from omnivmed.pipeline import PipelineConfig, instruct_dataset
    from omnivmed.surgical_demo import write_demo_tree

    raw = tmp_path / "raw"
    write_demo_tree(raw / "cholec80_vqa")
    recipe = tmp_path / "captioned.yaml"
    recipe.write_text(CAPTION_RECIPE)
    lines: list[str] = []
    with LocalServer(Script(scores=lambda seed, judge: (1, 1, 1))) as server:
        config = PipelineConfig(
            recipe=recipe, raw_root=raw, staged_root=tmp_path / "staged", out_root=tmp_path / "out", manifests_dir=None,
            caption_endpoint=str(config_file(tmp_path / "caption.yaml", server.base_url)),
        )
        report = instruct_dataset(config, progress=False, say=lines.append)
    assert [name for name, _ in report.missing] == ["cholec80_captions"]
    assert any(line.startswith("caption: cholec80_captions: ") and "0 judged captions accepted" in line for line in lines)
    assert any("nothing accepted" in line for line in lines)
    assert any(line.startswith("missing: cholec80_captions:") for line in lines)
    assert "video_caption" not in report.result.manifest.counts.get("task", {})


def test_instruct_dataset_with_the_caption_endpoint_down_goes_on_and_lists_it_missing(tmp_path):
    from omnivmed.pipeline import PipelineConfig, instruct_dataset
    from omnivmed.surgical_demo import write_demo_tree

    raw = tmp_path / "raw"
    write_demo_tree(raw / "cholec80_vqa")
    recipe = tmp_path / "captioned.yaml"
    recipe.write_text(CAPTION_RECIPE)
    url = f"http://127.0.0.1:{free_port()}/v1"
    lines: list[str] = []
    config = PipelineConfig(recipe=recipe, raw_root=raw, staged_root=tmp_path / "staged", out_root=tmp_path / "out",
                            manifests_dir=None, caption_endpoint=url)
    report = instruct_dataset(config, progress=False, say=lines.append)
    assert [name for name, _ in report.missing] == ["cholec80_captions"]
    assert any(url in line and "ConnectError" in line and "skipped" in line for line in lines)


# -- the demo's progress ----------------------------------------------------------


class EchoModel:
    """Stands in for the demo model (the real one is exercised by tests/omnivmed/test_caption_demo.py)."""

    @staticmethod
    async def responder(body, headers):
        await asyncio.sleep(0.02)
        return echo_responder(body, headers)


def test_demo_shows_each_request_and_a_real_rate(tmp_path):
    from omnivmed.caption_demo import run_demo

    lines: list[str] = []
    result = run_demo(tmp_path, limit=1, model=EchoModel(), candidates=1, extra_rounds=0, say=lines.append)
    requests = [line for line in lines if line.strip().startswith("request ")]
    assert len(requests) == 3  # a caption and two judges
    assert "caption, clip" in requests[0] and "tokens in" in requests[0] and "requests/s" in requests[-1] and "so far" in requests[-1]
    rps = result.outputs.run["requests_per_second"]
    assert rps and rps > 0
    again: list[str] = []
    run_demo(tmp_path, limit=1, model=EchoModel(), candidates=1, extra_rounds=0, say=again.append)
    assert not [line for line in again if line.strip().startswith("request ")]  # all cached


def test_slow_rates_are_not_printed_as_zero():
    from omnivmed.cli.data.caption import rate

    assert rate(0.04) == "0.04 requests/s (25.0 s per request)"
    assert rate(0.003) == "0.003 requests/s (333.3 s per request)"
    assert rate(12.34) == "12.3 requests/s"


def test_request_lines_name_failures():
    from omnivmed.caption_demo import RequestLines

    lines: list[str] = []
    show = RequestLines(lines.append)
    key = FailureKey("demo-generator", "http://127.0.0.1:1/v1", "connection", "ConnectError")
    show(RequestEvent("caption", "demo-generator", "clip-abc", 0, 0, 0.5, failed=key))
    assert "failed: demo-generator at http://127.0.0.1:1/v1: connection (ConnectError)" in lines[0]
