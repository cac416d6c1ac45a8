"""Config files: parsed, validated with the file named, keys never made public."""

from __future__ import annotations

import json

import pytest

from omnivmed.rejection_sampling.config import ConfigError, default_config, load_config

YAML = """
generator: {name: gen, base_url: "http://127.0.0.1:8000/v1", model: qwen-vl, api_key: sk-in-file-123456, media: video}
judges:
  - {name: vision, base_url: "http://127.0.0.1:8000/v1", model: qwen-vl, kind: multimodal}
  - name: medical
    base_url: "http://127.0.0.1:8001/v1"
    model: huatuo
    kind: text
    api_key_env: MEDICAL_KEY
    structured_output: none
    sampling: {temperature: 0.0, max_tokens: 200}
candidates: 3
extra_rounds: 1
acceptance: {min_each: 3, min_mean: 4.0}
"""


def test_yaml_config(tmp_path, monkeypatch):
    path = tmp_path / "caption.yaml"
    path.write_text(YAML)
    monkeypatch.setenv("MEDICAL_KEY", "sk-from-env-654321")
    config = load_config(path)
    assert config.generator.media == "video" and config.candidates == 3 and config.extra_rounds == 1
    assert [j.kind for j in config.judges] == ["multimodal", "text"]
    assert config.judges[1].sampling.max_tokens == 200 and config.judges[1].endpoint.structured_output == "none"
    assert config.acceptance.describe() == "every criterion of every judge >= 3 and mean >= 4"
    assert set(config.secrets()) == {"sk-in-file-123456", "sk-from-env-654321"}
    public = json.dumps(config.public())
    runtime = json.dumps(config.runtime())
    assert "MEDICAL_KEY" in runtime and "8001" in runtime
    for text in (public, runtime):
        assert "sk-in-file" not in text and "sk-from-env" not in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("judges: []", "no generator endpoint"),
        ("generator: {name: g, base_url: u, model: m, colour: red}", "unknown keys in generator: colour"),
        ("generator: {name: g, base_url: u, model: m, media: gif}", "media must be one of"),
        ("generator: {name: g, base_url: u, model: m}\ncandidates: 0", "candidates >= 1"),
        ("generator: {name: g, base_url: u, model: m}\nacceptance: {min_each: 6}", "min_each in 1..5"),
        ("generator: {name: g, base_url: u, model: m}\njudges: [{name: g, base_url: u, model: m}]", "unique"),
        ("generator: {name: g, base_url: u, model: m}\njudges: [{name: j, base_url: u, model: m, kind: psychic}]", "kind must be one of"),
        ("generator: [unclosed", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_default_is_the_papers_panel():
    config = default_config()
    assert config.generator.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    assert [(j.kind, j.endpoint.model) for j in config.judges] == [
        ("multimodal", "Qwen/Qwen2.5-VL-72B-Instruct"),
        ("text", "FreedomIntelligence/HuatuoGPT2-13B"),
    ]
    assert config.acceptance.min_each == 4
