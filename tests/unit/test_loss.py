"""The fused full-softmax loss equals F.cross_entropy in value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from stream_rec.model.loss import softmax_cross_entropy
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer


def _operands(n: int = 7, v: int = 50, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    return s, w, t


def _reference(s, w, t):
    loss = F.cross_entropy(s @ w.T, t)
    return (loss, *torch.autograd.grad(loss, (s, w)))


@pytest.mark.parametrize("normalised", [False, True])
def test_value_and_gradients_match_cross_entropy(normalised):
    s, w, t = _operands()
    bound = None
    if normalised:  # scaled cosines, bounded by the scale
        s = (F.normalize(s.detach(), dim=1) * 16).requires_grad_()
        w = F.normalize(w.detach(), dim=1).requires_grad_()
        bound = 16.0
    want = _reference(s, w, t)
    loss = softmax_cross_entropy(s, w, t, bound)
    got = (loss, *torch.autograd.grad(loss * 3.0, (s, w)))  # an upstream gradient other than 1
    assert torch.allclose(got[0], want[0])
    assert torch.allclose(got[1], 3.0 * want[1])
    assert torch.allclose(got[2], 3.0 * want[2])


def test_repeated_targets_accumulate():
    s, w, _ = _operands(n=5, v=4)
    t = torch.tensor([1, 1, 1, 2, 1])
    want = _reference(s, w, t)
    loss = softmax_cross_entropy(s, w, t)
    got = torch.autograd.grad(loss, (s, w))
    assert torch.allclose(got[0], want[1]) and torch.allclose(got[1], want[2])


def test_gradcheck():
    s, w, t = _operands(n=3, v=6, d=4)
    assert torch.autograd.gradcheck(lambda a, b: softmax_cross_entropy(a, b, t), (s, w))


def test_model_loss_equals_cross_entropy_of_its_logits():
    torch.manual_seed(0)
    # eval mode: in training the core readout drops item-table dimensions (CORE's robust distance)
    model = SessionTransformer(SASRecConfig(n_items=30, dim=8, n_heads=2, scale=12.0)).eval()
    session = F.normalize(torch.randn(6, 8), dim=1)
    targets = torch.randint(0, 30, (6,))
    assert torch.allclose(model.loss(session, targets), F.cross_entropy(model.logits(session), targets), atol=1e-5)


def test_a_huge_bound_falls_back_to_the_row_max():
    s, w, t = _operands()
    s = (F.normalize(s.detach(), dim=1) * 60).requires_grad_()
    w = F.normalize(w.detach(), dim=1).requires_grad_()
    assert torch.allclose(softmax_cross_entropy(s, w, t, bound=60.0), _reference(s, w, t)[0])


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="at least one row"):
        softmax_cross_entropy(torch.zeros(0, 4), torch.zeros(3, 4), torch.zeros(0, dtype=torch.long))
