"""A 3x3x3 ``Conv3d`` whose forward *and* backward run through oneDNN on the CPU.

Why: torch's dispatch heuristic sends batch-1 inputs with ``N*C*T*H <= 20480`` (every 2- or
4-channel input conv of a 16-frame cine, every 64 x 64 training crop) to a native kernel that
is 3-10x slower than oneDNN, and oneDNN itself is faster in channels-last layout. Forcing
oneDNN in the forward alone is not enough: autograd's backward of ``mkldnn_convolution`` goes
through ``convolution_backward``, which applies the same heuristic again. So the backward is
written out here:

* ``grad_input`` is the convolution of ``grad_output`` with the flipped, transposed kernel
  (exact for stride 1, dilation 1, 'same' zero padding), run through oneDNN like the forward;
* ``grad_weight`` goes through ``convolution_backward`` on the input split into two halves
  along time (each with its one-frame halo), so the batch is never 1 and oneDNN is chosen.
  The two halves together see exactly the padded input, so the sum is the true gradient.

Other devices, dtypes, builds without oneDNN and other conv settings take the stock path.
Parameters and state-dict keys are those of ``nn.Conv3d``, so weight files do not change.
BENCHMARKS.md has the measured times.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

_ONEDNN_CONV = getattr(torch.ops.aten, "mkldnn_convolution", None)
_CL = torch.channels_last_3d
_ONES = [1, 1, 1]


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Stride-1, padding-1 3x3x3 convolution through oneDNN in channels-last layout."""
    assert _ONEDNN_CONV is not None
    return _ONEDNN_CONV(
        x.contiguous(memory_format=_CL),
        weight.contiguous(memory_format=_CL),
        bias,
        _ONES,
        _ONES,
        _ONES,
        1,
    )


def _weight_grad(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``dL/dweight`` with the time axis split in two halves (batch >= 2, oneDNN path)."""
    t = x.shape[2]
    half = (t + 1) // 2
    odd = 2 * half - t  # an odd T gets one extra zero frame (and zero gradient) at the end
    padded = F.pad(x, (0, 0, 0, 0, 1, 1 + odd))  # the zero frames padding=1 adds in time
    grad_out = F.pad(grad_out, (0, 0, 0, 0, 0, odd))
    xs = torch.cat((padded[:, :, : half + 2], padded[:, :, half:]))
    gs = torch.cat((grad_out[:, :, :half], grad_out[:, :, half:]))
    return torch.ops.aten.convolution_backward(
        gs.contiguous(memory_format=_CL),
        xs.contiguous(memory_format=_CL),
        weight.contiguous(memory_format=_CL),
        None,
        _ONES,
        [0, 1, 1],  # time is already padded
        _ONES,
        False,
        [0, 0, 0],
        1,
        [False, True, False],
    )[1]


class _OneDNNConv3d(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad_out, weight.flip(2, 3, 4).transpose(0, 1), None)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(grad_out, x, weight).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3, 4))
        return grad_x, grad_w, grad_b


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs CPU float32 3x3x3 'same' convolutions through oneDNN both ways.

    See the module docstring for why; outputs and gradients match ``F.conv3d`` to float
    rounding.
    """

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (
            _ONEDNN_CONV is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and tuple(self.kernel_size) == (3, 3, 3)
            and tuple(self.padding) == (1, 1, 1)
            and tuple(self.stride) == (1, 1, 1)
            and tuple(self.dilation) == (1, 1, 1)
            and self.groups == 1
            and x.shape[2] >= 2
            and torch.backends.mkldnn.is_available()
            and bool(torch.backends.mkldnn.enabled)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast_path(x):
            return super().forward(x)
        out = _OneDNNConv3d.apply(x, self.weight, self.bias)
        assert isinstance(out, torch.Tensor)
        return out
