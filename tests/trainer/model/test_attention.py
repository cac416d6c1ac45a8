import torch
import torch.nn.functional as F

from omnivmed.trainer.model.attention import block_diagonal_mask, varlen_attention


def test_varlen_attention_equals_per_sample_attention():
    torch.manual_seed(0)
    lengths = [5, 1, 9, 3]
    q, k, v = (torch.randn(sum(lengths), 4, 16) for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    packed = varlen_attention(q, k, v, cu, impl="sdpa")
    for i in range(len(lengths)):
        s = slice(int(cu[i]), int(cu[i + 1]))
        alone = F.scaled_dot_product_attention(q[s].transpose(0, 1), k[s].transpose(0, 1), v[s].transpose(0, 1))
        assert torch.allclose(packed[s], alone.transpose(0, 1), atol=1e-6)


def test_a_sample_never_sees_another():
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 8) for _ in range(3))
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    before = varlen_attention(q, k, v, cu, impl="sdpa")
    k2, v2 = k.clone(), v.clone()
    k2[2:], v2[2:] = torch.randn(4, 2, 8), torch.randn(4, 2, 8)  # change only the second sample
    after = varlen_attention(q, k2, v2, cu, impl="sdpa")
    assert torch.equal(before[:2], after[:2])
    assert not torch.allclose(before[2:], after[2:])


def test_block_diagonal_mask():
    mask = block_diagonal_mask(torch.tensor([0, 1, 3]), 3)
    assert mask.tolist() == [[True, False, False], [False, True, True], [False, True, True]]
