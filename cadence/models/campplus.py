"""CAM++ speaker encoder: a 2-D conv front end then densely connected TDNN blocks with context-aware
masking, statistics pooling and a 192-dim x-vector. Input is mean-normalised 80-bin Kaldi fbank."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def bn_relu(channels: int, relu: bool = True, affine: bool = True) -> nn.Sequential:
    mods = [("batchnorm", nn.BatchNorm1d(channels, affine=affine))]
    if relu:
        mods.append(("relu", nn.ReLU()))
    return nn.Sequential(OrderedDict(mods))


class BasicResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    def __init__(self, channels: int = 32, feat_dim: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(BasicResBlock(channels, channels, 2), BasicResBlock(channels, channels, 1))
        self.layer2 = nn.Sequential(BasicResBlock(channels, channels, 2), BasicResBlock(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x):  # (B, F, T) -> (B, C*F/8, T)
        out = F.relu(self.bn1(self.conv1(x[:, None])))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class TDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2 * dilation,
                                dilation=dilation, bias=False)
        self.nonlinear = bn_relu(cout)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, reduction: int = 2):
        super().__init__()
        self.linear_local = nn.Conv1d(cin, cout, kernel, padding=(kernel - 1) // 2 * dilation, dilation=dilation,
                                      bias=False)
        self.linear1 = nn.Conv1d(cin, cin // reduction, 1)
        self.linear2 = nn.Conv1d(cin // reduction, cout, 1)

    def forward(self, x, seg_len: int = 100):
        y = self.linear_local(x)
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        seg = seg[..., None].expand(*seg.shape, seg_len).reshape(*seg.shape[:-1], -1)[..., : x.shape[-1]]
        context = x.mean(-1, keepdim=True) + seg
        return y * torch.sigmoid(self.linear2(F.relu(self.linear1(context))))


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, bn_channels: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = bn_relu(cin)
        self.linear1 = nn.Conv1d(cin, bn_channels, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, cout, kernel, dilation)

    def forward(self, x):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, n_layers: int, cin: int, growth: int, bn_channels: int, kernel: int, dilation: int):
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(cin + i * growth, growth, bn_channels, kernel, dilation))

    def forward(self, x):
        for layer in self:
            x = torch.cat((x, layer(x)), dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.nonlinear = bn_relu(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = bn_relu(cout, relu=False, affine=False)

    def forward(self, x):  # (B, C) -> (B, cout)
        return self.nonlinear(self.linear(x[..., None])[..., 0])


class StatsPool(nn.Module):
    def forward(self, x):
        return torch.cat((x.mean(-1), x.std(-1, unbiased=True)), dim=-1)


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth: int = 32, bn_size: int = 4,
                 init_channels: int = 128):
        super().__init__()
        self.head = FCM(feat_dim=feat_dim)
        self.xvector = nn.Sequential(OrderedDict([("tdnn", TDNNLayer(self.head.out_channels, init_channels, 5, stride=2))]))
        ch = init_channels
        for i, (n, k, d) in enumerate(zip((12, 24, 16), (3, 3, 3), (1, 2, 2))):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(n, ch, growth, bn_size * growth, k, d))
            ch += n * growth
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(ch, ch // 2))
            ch //= 2
        self.xvector.add_module("out_nonlinear", bn_relu(ch))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(ch * 2, embedding_size))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, 80) mean-normalised fbank -> x-vector (B, 192)."""
        return self.xvector(self.head(feats.permute(0, 2, 1)))
