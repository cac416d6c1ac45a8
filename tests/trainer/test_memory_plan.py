"""The memory plan's parameter formula against real models, and what it says for the paper's hardware."""

from __future__ import annotations

import pytest

from omnivmed.trainer.memory_plan import (
    SHAPES,
    LlmShape,
    VisionShape,
    Workload,
    llm_params,
    plan_stage,
    projector_params,
    vision_params,
)


def test_the_formula_counts_the_tiny_model_built_in_process():
    from transformers import Qwen2ForCausalLM, SiglipVisionModel

    from omnivmed.trainer.model.projector import Projector
    from omnivmed.trainer.model.tiny import tiny_configs

    vision_config, llm_config = tiny_configs(512)
    vision = VisionShape(
        vision_config.hidden_size, vision_config.intermediate_size, vision_config.num_hidden_layers,
        vision_config.patch_size, (vision_config.image_size // vision_config.patch_size) ** 2,
    )  # fmt: skip
    llm = LlmShape(
        llm_config.hidden_size, llm_config.intermediate_size, llm_config.num_hidden_layers,
        llm_config.num_attention_heads, llm_config.num_key_value_heads, llm_config.vocab_size, llm_config.tie_word_embeddings,
    )  # fmt: skip
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731 (tied weights counted once)
    assert vision_params(vision) == count(SiglipVisionModel(vision_config))
    assert llm_params(llm) == count(Qwen2ForCausalLM(llm_config))
    assert projector_params(vision, llm) == count(Projector(vision.hidden, llm.hidden))
    untied = llm_config.__class__(**{**llm_config.to_dict(), "tie_word_embeddings": False})
    assert llm_params(LlmShape(*[getattr(llm, f) for f in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab")], tied=False)) == count(Qwen2ForCausalLM(untied))


@pytest.mark.parametrize("preset, total, non_embedding", [("1.5b", 1.54, 1.31), ("7b", 7.61, 6.53)])
def test_the_presets_match_qwen25s_published_sizes(preset, total, non_embedding):
    _, llm = SHAPES[preset]
    embedding = llm.vocab * llm.hidden * (1 if llm.tied else 2)
    assert abs(llm_params(llm) / 1e9 - total) < 0.01  # the model cards' "Number of Parameters"
    assert abs((llm_params(llm) - embedding) / 1e9 - non_embedding) < 0.01


def test_what_fits_the_papers_8_x_24_gb_and_what_does_not():
    work = Workload(text_tokens=8192, visual_tokens=3499)
    small = {ckpt: plan_stage("1.5b", 2, 8, work, checkpointing=ckpt) for ckpt in (False, True)}
    assert small[True].fits(24) and not small[False].fits(24)  # the paper's 1.5B on 8 RTX 3090: checkpointing on
    big = plan_stage("7b", 3, 8, work, checkpointing=True)
    assert not big.fits(24) and big.fits(80)
    # Stage 1 freezes the LLM: no gradients or optimizer state for it.
    first = plan_stage("7b", 1, 8, work, checkpointing=True)
    assert first.trained == ("vision", "projector") and first.gib["optimizer"] < big.gib["optimizer"] / 10
    # Sharding divides the states, not the activations.
    one = plan_stage("7b", 3, 1, work, checkpointing=True)
    assert one.gib["optimizer"] == pytest.approx(8 * big.gib["optimizer"], rel=0.01)
    assert one.gib["activations"] == big.gib["activations"]
