"""The tiny path goes through the same from_pretrained(path) calls as real checkpoints."""

from transformers import AutoTokenizer, Qwen2ForCausalLM, SiglipVisionModel

from omnivmed.trainer.model.tiny import train_tiny_tokenizer, write_tiny_base


def test_tiny_base_reloads_through_transformers(tiny_base):
    assert isinstance(SiglipVisionModel.from_pretrained(tiny_base / "vision"), SiglipVisionModel)
    assert isinstance(Qwen2ForCausalLM.from_pretrained(tiny_base / "llm"), Qwen2ForCausalLM)
    reloaded = AutoTokenizer.from_pretrained(tiny_base / "llm")
    fresh = train_tiny_tokenizer()
    text = "What organ? The liver, 12 mm. ünïcode\n\n<|im_start|>user\n<|image_pad|>"
    assert reloaded(text)["input_ids"] == fresh(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == text  # byte-level: any text round-trips
    chat = reloaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_base_is_deterministic(tmp_path):
    from safetensors.torch import load_file
    import torch

    a, b = write_tiny_base(tmp_path / "a", seed=0), write_tiny_base(tmp_path / "b", seed=0)
    wa, wb = load_file(str(a / "llm" / "model.safetensors")), load_file(str(b / "llm" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "llm" / "tokenizer.json").read_bytes() == (b / "llm" / "tokenizer.json").read_bytes()
