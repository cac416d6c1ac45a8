import pytest
import torch

from omnivmed.trainer.model.rope import Rotary3D, apply_rotary, default_split


def scores(rotary: Rotary3D, q: torch.Tensor, k: torch.Tensor, pq, pk) -> torch.Tensor:
    """q.k after rotating q to position pq and k to position pk (one head)."""
    positions = torch.tensor([pq, pk])
    cos, sin = rotary(positions)
    x = torch.stack([q, k])[:, None, :]
    rq, rk = apply_rotary(x, cos, sin)[:, 0]
    return (rq * rk).sum()


@pytest.mark.parametrize(
    "name, pq, pk, shift",
    [
        ("2d", (0, 3, 5), (0, 7, 1), (0, 4, -2)),  # images: t is always 0
        ("volume", (2, 3, 5), (9, 7, 1), (5, 2, 3)),  # slice index on the third axis
        ("video", (0, 10, 4), (7, 0, 13), (11, 6, 9)),  # frame index on the third axis
    ],
)
def test_attention_scores_depend_only_on_position_differences(name, pq, pk, shift):
    torch.manual_seed(0)
    rotary = Rotary3D(72, (12, 12, 12))
    q, k = torch.randn(72, dtype=torch.float64), torch.randn(72, dtype=torch.float64)
    moved = lambda p: tuple(a + b for a, b in zip(p, shift))  # noqa: E731
    base = scores(rotary, q, k, pq, pk)
    assert torch.allclose(base, scores(rotary, q, k, moved(pq), moved(pk)), atol=1e-4)
    # ...and they do depend on the difference along every axis (no axis is left unrotated)
    for axis in range(3):
        other = list(pk)
        other[axis] += 1
        assert not torch.allclose(base, scores(rotary, q, k, pq, tuple(other)), atol=1e-4), (name, axis)


def test_pair_split_defaults_and_checks():
    assert default_split(72) == (12, 12, 12)  # so400m
    assert default_split(64) == (10, 11, 11)  # 32 pairs do not split by three
    assert sum(default_split(16)) == 8
    with pytest.raises(ValueError, match="summing to head_dim/2"):
        Rotary3D(64, (12, 12, 12))
    with pytest.raises(ValueError, match="odd"):
        default_split(63)


def test_split_decides_which_pairs_rotate_with_which_axis():
    rotary = Rotary3D(16, (2, 3, 3))
    cos, _ = rotary(torch.tensor([[5, 0, 0]]))  # only t moves: only the t pairs turn
    turned = (cos[0, :8] != 1).tolist()
    assert turned == [True, True, False, False, False, False, False, False]


def test_angles_are_fp32_for_bf16_inputs():
    rotary = Rotary3D(72)
    cos, sin = rotary(torch.tensor([[0, 300, 301]]))
    assert cos.dtype == torch.float32
    x = torch.randn(1, 2, 72, dtype=torch.bfloat16)
    out = apply_rotary(x, cos, sin)
    assert out.dtype == torch.bfloat16
    exact = apply_rotary(x.double(), cos.double(), sin.double())
    assert torch.allclose(out.double(), exact, atol=0.05)
