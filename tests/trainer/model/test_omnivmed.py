"""The composed model: pad embeddings replaced by features, text-only batches, the saved layout."""

from __future__ import annotations

import copy

import pytest
import torch

from omnivmed.data.schema import Provenance, Turn, make_sample
from omnivmed.trainer.data.batch import collate, make_example
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.visual import VisualSpec
from omnivmed.trainer.model.omnivmed import load_omnivmed

SPEC = VisualSpec(8, (0.5,) * 3, (0.5,) * 3, 4, 32 * 32, 4 * 32 * 32, True, 0.1)


def text_only_batch(model):
    sample = make_sample(
        source="synthetic", split="train", task="vqa", modality="unspecified", visual_kind="none", frames=[],
        frame_format=None, conversations=[Turn("user", "What is a CT scan?"), Turn("assistant", "An x-ray volume.")],
        provenance=Provenance((), "1", "CC0-1.0", "https://example.org"),
    )  # fmt: skip
    example = make_example(sample, ChatEncoder(model.tokenizer, 128), SPEC)
    return collate([example], model.tokenizer.pad_token_id, 3 * 8 * 8)


def test_text_only_batch_still_runs_the_vision_tower_with_zero_weight(tiny_model):
    model = copy.deepcopy(tiny_model)
    batch = text_only_batch(model)
    loss, count = model(batch)
    assert count > 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.vision.named_parameters() if "position_embedding" not in n]
    assert all(g is not None and not g.any() for g in grads)  # touched (so DDP never waits), zero
    assert all(p.grad is not None and not p.grad.any() for p in model.projector.parameters())


def test_visual_features_must_match_the_pads(tiny_model):
    batch = text_only_batch(tiny_model)
    batch.input_ids[0, 1] = tiny_model.pad_ids[0]
    with pytest.raises(ValueError, match="1 visual pad tokens in the text but 0 visual features"):
        tiny_model(batch)


def test_saved_folder_reloads_with_the_same_outputs(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    assert not list(tmp_path.glob(".*tmp"))
    again = load_omnivmed(tmp_path / "model")
    batch = text_only_batch(tiny_model)
    with torch.no_grad():
        assert torch.equal(tiny_model(batch)[0], again(batch)[0])
    assert again.arch == tiny_model.arch


def test_vision_weights_load_from_a_full_siglip_checkpoint(tiny_base, tmp_path):
    """siglip-so400m-patch14-384 is published as a whole SiglipModel (text and vision towers)."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

    from omnivmed.trainer.model.omnivmed import load_model

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)  # fmt: skip
    text = SiglipTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    torch.manual_seed(1)
    full = SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
    full.save_pretrained(tmp_path / "siglip")
    model = load_model(tmp_path / "siglip", tiny_base / "llm")
    ours = model.vision.siglip.encoder.layers[1].mlp.fc2.weight
    assert torch.equal(ours, full.vision_model.encoder.layers[1].mlp.fc2.weight)
    assert model.arch.rope_split == (2, 3, 3)  # head_dim 16: 8 pairs
