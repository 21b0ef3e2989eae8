"""The projection of HLOP as plain functions (no modules, no state).

A weight update ``dW`` (C_out x N) keeps the responses of old tasks when it is orthogonal to
their activity's principal subspace, spanned by the orthonormal rows ``H_old`` of a lateral
circuit::

    input mode:   grad_W = G^T (X - X H_old^T H_old)      (the activity rows projected)
    weight mode:  grad_W = (G^T X) (I - H_old^T H_old)    (the flattened gradient projected)

The two are equal for non-spiking circuits.  A convolution's activity is its unfolded input
patches (C_in k_h k_w values each, in the order of its flattened weight's columns).  The
projection ``X -> X - (X H_old^T) H_old`` itself is :meth:`LateralCircuit.project
<hlop.LateralCircuit.project>`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor


def project_weight_grad(grad_w: Tensor, project: Callable[[Tensor], Tensor]) -> Tensor:
    """Weight-mode projection of a weight gradient: ``grad_W (I - H^T H)``.

    ``grad_w`` (C_out x N, or a convolution's C_out x C_in x k_h x k_w, flattened to
    C_out x C_in k_h k_w as its patches) is projected row by row by ``project`` (a
    circuit's :meth:`~hlop.LateralCircuit.project`)."""
    return project(grad_w.reshape(grad_w.shape[0], -1)).reshape(grad_w.shape)


def unfold_patches(
    x: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """A convolution's input patches as rows (B * L x C_in k_h k_w), ordered as the
    flattened columns of its weight: the rows of ``F.unfold`` (transposed), taken from
    strided views of the padded input instead of computed by ``F.unfold``.

    ``padding`` is zero padding in ``F.pad`` order ``(left, right, top, bottom)``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    xp = F.pad(x, padding)
    v = xp.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    v = v[..., ::dh, ::dw]  # B, C, H_out, W_out, kh, kw
    return v.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)
