"""Our layer loop over SigLIP's modules against transformers' own forward, and packing."""

import torch

from omnivmed.trainer.data.visual import patchify
from omnivmed.trainer.model.vision import RopeVisionEncoder


def _encoder(tiny_base, **options):
    """transformers' SigLIP, and our encoder over a second copy of it (the encoder takes its model's layers over)."""
    from transformers import SiglipVisionModel

    siglip = SiglipVisionModel.from_pretrained(tiny_base / "vision")
    ours = SiglipVisionModel.from_pretrained(tiny_base / "vision")
    return siglip, RopeVisionEncoder(ours, attention="sdpa", **options).eval()


def _packed(images: list[torch.Tensor], patch: int):
    patches, positions, lengths, grids = [], [], [], []
    for t, image in enumerate(images):
        _, h, w = image.shape
        patches.append(patchify(image.permute(1, 2, 0)[None].numpy(), patch)[0])
        hh, ww = torch.meshgrid(torch.arange(h // patch), torch.arange(w // patch), indexing="ij")
        positions.append(torch.stack([torch.zeros_like(hh), hh, ww], -1).reshape(-1, 3))
        lengths.append(len(positions[-1]))
        grids.append((h // patch, w // patch))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.cat(patches), torch.cat(positions), cu, torch.tensor(grids)


def test_layer_loop_matches_transformers_siglip_when_positions_do_not_rotate(tiny_base, monkeypatch):
    siglip, encoder = _encoder(tiny_base, keep_abs_pos=True)
    torch.manual_seed(0)
    image = torch.randn(3, 32, 32)  # the tiny config's native 4x4 grid: the absolute table is used as is
    patches, positions, cu, grids = _packed([image], 8)
    identity = lambda p: (torch.ones(len(p), encoder.head_dim), torch.zeros(len(p), encoder.head_dim))  # noqa: E731
    monkeypatch.setattr(encoder.rotary, "forward", identity)
    with torch.no_grad():
        ours = encoder(patches, positions, cu, grids)
        theirs = siglip(pixel_values=image[None]).last_hidden_state[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_packed_inputs_of_any_size_equal_each_input_alone(tiny_base):
    _, encoder = _encoder(tiny_base)
    torch.manual_seed(0)
    images = [torch.randn(3, 24, 40), torch.randn(3, 16, 16), torch.randn(3, 48, 8)]  # no fixed 224 (or 32)
    with torch.no_grad():
        together = encoder(*_packed(images, 8))
        alone = torch.cat([encoder(*_packed([im], 8)) for im in images])
    assert together.shape == (15 + 4 + 6, 32)
    assert torch.allclose(together, alone, atol=1e-5)


def test_unused_parameters_are_the_absolute_table_without_keep_abs_pos(tiny_base):
    _, plain = _encoder(tiny_base)
    _, with_table = _encoder(tiny_base, keep_abs_pos=True)
    assert [p.shape for p in plain.unused_parameters()] == [torch.Size([16, 32])]
    assert with_table.unused_parameters() == []


def test_layers_run_as_module_calls_under_siglip_parameter_names(tiny_base):
    """FSDP's per-layer units gather their weights in the hooks of the layer's call."""
    siglip, encoder = _encoder(tiny_base)
    assert list(encoder.siglip.state_dict()) == list(siglip.state_dict())  # the saved layout does not change
    called = []
    for layer in encoder.layers:
        layer.register_forward_pre_hook(lambda module, args: called.append(module))
    with torch.no_grad():
        encoder(*_packed([torch.randn(3, 16, 24)], 8))
    assert called == list(encoder.layers)
