"""The five public core functions agree with an independent implementation of method.md."""

import math

import numpy as np
import pytest
import torch

from tsam_ext.core import cross_maps, loss, schedule, text_maps

import independent as ind

DTYPES = [torch.float16, torch.float32, torch.float64]


def tolerance(dtype):
    return 2e-3 if dtype == torch.float16 else 1e-5


def causal_self_attention(seed, layers=3, heads=4, s=77):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(layers, heads, s, s, generator=g, dtype=torch.float64) * 3
    mask = torch.ones(s, s, dtype=torch.bool).tril()
    return logits.masked_fill(~mask, float("-inf")).softmax(-1)


def peaky_maps(seed, h=16, w=16, s=77):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(h, w, s, generator=g, dtype=torch.float64) * 2).softmax(-1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["reference", "paper"])
@pytest.mark.parametrize("n,gamma", [(7, 3.0), (1, 3.0), (12, 1.0), (30, 0.7), (75, 5.0)])
def test_text_target_matches_independent(dtype, order, n, gamma):
    p = causal_self_attention(n)
    got = text_maps.text_target(p.to(dtype), n, gamma=gamma, order=order)
    want = ind.text_target(p.to(dtype).double(), n, gamma, order)
    assert got.shape == (n, n)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(got.double(), want, atol=tolerance(dtype), rtol=tolerance(dtype))


def test_text_target_reference_rows_sum_to_one_and_lower_triangular():
    t = text_maps.text_target(causal_self_attention(1), 9)
    assert torch.allclose(t.sum(1), torch.ones(9, dtype=t.dtype), atol=1e-5)
    assert torch.equal(t, t.tril())


def test_text_target_orders_differ_and_reject_unknown():
    p = causal_self_attention(2)
    assert not torch.allclose(text_maps.text_target(p, 6, order="paper"), text_maps.text_target(p, 6))
    with pytest.raises(ValueError):
        text_maps.text_target(p, 6, order="other")
    with pytest.raises(ValueError):
        text_maps.text_target(p, 77)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("n,grid", [(7, (16, 16)), (2, (24, 16)), (20, (8, 12))])
def test_token_cosine_matches_independent(dtype, smooth, n, grid):
    maps = peaky_maps(n + grid[0], *grid)
    got = cross_maps.token_cosine(maps.to(dtype), n, smooth=smooth)
    want = ind.token_cosine(maps.to(dtype), n, smooth)
    torch.testing.assert_close(got.double(), want, atol=tolerance(dtype), rtol=tolerance(dtype))
    assert torch.equal(got, got.T) and torch.equal(got.diagonal(), torch.ones(n, dtype=got.dtype))


def test_smoothing_kernel_is_the_references_not_a_textbook_gaussian():
    k = cross_maps.smoothing_kernel(torch.float64)
    torch.testing.assert_close(k, ind.gaussian_kernel(), atol=1e-12, rtol=0)
    e = math.exp(-1)
    assert k[1, 1].item() == pytest.approx(1 / (1 + 2 * e) ** 2)
    textbook = math.exp(-1 / (2 * 0.25))  # sigma 0.5: exp(-d^2 / (2 sigma^2)) at d = 1
    assert k[0, 1] / k[1, 1] != pytest.approx(textbook)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_normalize_matches_independent(dtype):
    c = cross_maps.token_cosine(peaky_maps(3), 8)
    got = cross_maps.row_normalize(c.to(dtype))
    torch.testing.assert_close(got.double(), ind.row_normalize(c.to(dtype).double()), atol=tolerance(dtype), rtol=tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 3, 7, 40])
def test_losses_match_independent_with_gradients(dtype, n):
    t = text_maps.text_target(causal_self_attention(n), n).to(dtype)
    maps = peaky_maps(n + 100).to(dtype).requires_grad_(True)
    ref_maps = maps.detach().double().requires_grad_(True)

    c = cross_maps.token_cosine(maps, n)
    c_ind = ind.token_cosine(ref_maps, n, True)
    for got, want in [(loss.reference_loss(t, c), ind.reference_loss(t.double(), c_ind)),
                      (loss.paper_loss(t, cross_maps.row_normalize(c)), ind.paper_loss(t.double(), ind.row_normalize(c_ind)))]:
        torch.testing.assert_close(got.double(), want, atol=tolerance(dtype), rtol=tolerance(dtype))
        g_got, = torch.autograd.grad(got, maps, retain_graph=True)
        g_want, = torch.autograd.grad(want, ref_maps, retain_graph=True)
        torch.testing.assert_close(g_got.double(), g_want, atol=tolerance(dtype) * 10, rtol=tolerance(dtype) * 10)


def test_losses_are_zero_below_two_tokens():
    for n in (0, 1):
        t = torch.ones(n, n)
        assert loss.reference_loss(t, t).item() == 0 and loss.paper_loss(t, t).item() == 0


def test_reference_loss_first_pair_has_no_gradient():
    """Row 2 compares a single element: its cosine is 1 whatever the maps, as in the reference."""
    t = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    c = torch.tensor([[1.0, 0.2], [0.2, 1.0]], requires_grad=True)
    value = loss.reference_loss(t, c)
    g, = torch.autograd.grad(value, c)
    assert value.item() == pytest.approx(0.0, abs=1e-7) and torch.count_nonzero(g) == 0


@pytest.mark.parametrize("alpha,n", [(5.0, 50), (5.0, 20), (2.5, 1), (7.0, 3)])
def test_step_sizes_match_independent(alpha, n):
    got = schedule.step_sizes(alpha, n)
    np.testing.assert_allclose(np.asarray(got), ind.step_sizes(alpha, n), rtol=1e-12)
    assert got[0] == pytest.approx(alpha) and (n == 1 or got[-1] == pytest.approx(alpha * math.sqrt(0.5)))


def test_gradcheck_float64():
    t = text_maps.text_target(causal_self_attention(5), 5).double()
    maps = peaky_maps(5, 6, 6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: loss.reference_loss(t, cross_maps.token_cosine(m, 5)), (maps,))
    assert torch.autograd.gradcheck(
        lambda m: loss.paper_loss(t, cross_maps.row_normalize(cross_maps.token_cosine(m, 5, smooth=False))), (maps,))
