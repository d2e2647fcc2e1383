"""SoundNet8 in PyTorch, with the original Torch7 architecture (Aytar, Vondrick & Torralba, 2016).

Seven blocks of Conv1d (stride 2, padding kernel/2) + BatchNorm + ReLU, max-pool 8/8 after conv1 and
conv2 and 4/4 after conv5, then two conv8 heads (kernel 8, stride 2, no padding) on conv7: ImageNet
objects (1000) and Places scenes (401), as logits. The layer table lives in ``soundnet8.engine.arch``
so the engine can do the same arithmetic without torch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from soundnet8.engine.arch import BN_EPS, HEADS, OUTPUTS, TRUNK, ConvSpec

from .weights import Weights


def _conv(spec: ConvSpec, conv2d: bool) -> nn.Module:
    if conv2d:  # the (k, 1) Conv2d layout of the common PyTorch ports, kept for benchmarks
        return nn.Conv2d(spec.in_channels, spec.out_channels, (spec.kernel, 1), (spec.stride, 1), (spec.padding, 0))
    return nn.Conv1d(spec.in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding)


class Block(nn.Sequential):
    """conv -> BatchNorm -> ReLU (-> max-pool), or a bare conv for the heads."""

    def __init__(self, spec: ConvSpec, conv2d: bool = False) -> None:
        pool_cls, bn_cls = (nn.MaxPool2d, nn.BatchNorm2d) if conv2d else (nn.MaxPool1d, nn.BatchNorm1d)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict(conv=_conv(spec, conv2d))
        if spec.batchnorm:
            layers["bn"] = bn_cls(spec.out_channels, eps=BN_EPS)
            layers["relu"] = nn.ReLU()
        if spec.pool > 1:
            layers["pool"] = pool_cls((spec.pool, 1) if conv2d else spec.pool)
        super().__init__(layers)


class SoundNet8(nn.Module):
    """Input (batch, samples) float32 waveform at 22,050 Hz scaled to ±256; returns every output.

    ``forward`` returns a tuple in :data:`OUTPUTS` order (pool1, pool2, conv3, conv4, pool5, conv6,
    conv7, objects, scenes), each (batch, channels, frames). With ``heads=False`` only the seven
    trunk outputs are returned (inputs shorter than about 9.5 s give the heads no frame).
    """

    output_names = OUTPUTS

    def __init__(self, *, heads: bool = True, conv2d: bool = False) -> None:
        super().__init__()
        self.conv2d = conv2d
        self.trunk = nn.ModuleList(Block(spec, conv2d) for spec in TRUNK)
        self.heads = nn.ModuleList(Block(spec, conv2d) for spec in HEADS) if heads else nn.ModuleList()

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = waveform.unsqueeze(1)
        if self.conv2d:
            x = x.unsqueeze(-1)
        outputs = []
        for block in self.trunk:
            x = block(x)
            outputs.append(x)
        for head, spec in zip(self.heads, HEADS):
            if x.shape[2] >= spec.kernel or torch.jit.is_tracing():
                outputs.append(head(x))
            else:  # too short for conv8: no frame, as the exported ONNX model's If branch gives
                outputs.append(x.new_zeros((x.shape[0], spec.out_channels, 0) + x.shape[3:]))
        if self.conv2d:
            outputs = [o.squeeze(-1) for o in outputs]
        return tuple(outputs)

    @torch.no_grad()
    def load_weights(self, weights: Weights) -> "SoundNet8":
        for spec, block in zip(TRUNK + HEADS, list(self.trunk) + list(self.heads)):
            arrays = weights.layers[spec.name]
            w = torch.from_numpy(arrays["weights"])
            block.conv.weight.copy_(w.unsqueeze(-1) if self.conv2d else w)
            block.conv.bias.copy_(torch.from_numpy(arrays["biases"]))
            if spec.batchnorm:
                block.bn.weight.copy_(torch.from_numpy(arrays["gamma"]))
                block.bn.bias.copy_(torch.from_numpy(arrays["beta"]))
                block.bn.running_mean.copy_(torch.from_numpy(arrays["mean"]))
                block.bn.running_var.copy_(torch.from_numpy(arrays["var"]))
        return self.eval()

    @torch.no_grad()
    def fold_batchnorm(self) -> "SoundNet8":
        """Fold every inference-mode BatchNorm into its convolution (in place): y = a*conv(x) + b."""
        for block in self.trunk:
            if "bn" not in block._modules:
                continue
            conv, bn = block.conv, block.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
            conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
            block._modules["bn"] = nn.Identity()
        return self


def build_model(weights: Weights, *, heads: bool = True, conv2d: bool = False, fold: bool = False) -> SoundNet8:
    """A SoundNet8 in eval mode with the pretrained weights (BatchNorm folded when ``fold``)."""
    model = SoundNet8(heads=heads, conv2d=conv2d).load_weights(weights)
    return model.fold_batchnorm() if fold else model

