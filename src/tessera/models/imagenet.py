"""ImageNet-class architectures written the way torchvision and timm write them (neither installs beside this
torch): torchvision's ResNet-18/50 and MobileNetV2, and an EfficientNet-B0 in timm's style (``BatchNormAct2d``
that traces into ``F.batch_norm`` + an ``_assert``, squeeze-excitation on ``x.mean``, SiLU, depthwise 5x5).

The compiler must handle *their* graphs, not a tidied copy, so the building blocks keep the originals' module
names, call forms and control flow (timm's VGG head branches on its input's shape). Any input size works (global
pooling before the classifier; VGG's five pools need 32 pixels or more).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import _assert, nn  # timm's _assert is torch's: fx records it as a node

from tessera.models.registry import register_model


# -- torchvision ResNet --------------------------------------------------------------------------------------
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class TvBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample, self.stride = downsample, stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample, self.stride = downsample, stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvResNet(nn.Module):
    """torchvision.models.ResNet: 7x7 stride-2 stem, padded 3x3 maxpool, four stages, avgpool, flatten, fc."""

    def __init__(self, block, layers: list[int], num_classes: int = 1000, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model
def tv_resnet18(in_channels: int = 3, num_classes: int = 1000, width: int = 64) -> TvResNet:
    return TvResNet(TvBasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)


@register_model
def tv_resnet50(in_channels: int = 3, num_classes: int = 1000, width: int = 64) -> TvResNet:
    return TvResNet(TvBottleneck, [3, 4, 6, 3], num_classes, in_channels, width)


# -- torchvision MobileNetV2 ---------------------------------------------------------------------------------
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation_layer=nn.ReLU6):
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class TvInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class TvMobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2: ReLU6, depthwise 3x3, inverted residuals, F.adaptive_avg_pool2d head."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                   [6, 320, 1, 1]]
        c = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [Conv2dNormActivation(in_channels, c, stride=2)]
        for t, ch, n, s in setting:
            out = _make_divisible(ch * width_mult)
            for i in range(n):
                features.append(TvInvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        features.append(Conv2dNormActivation(c, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model
def tv_mobilenet_v2(in_channels: int = 3, num_classes: int = 1000, width: float = 1.0) -> TvMobileNetV2:
    return TvMobileNetV2(num_classes, width, in_channels)


# -- timm-style EfficientNet-B0 ------------------------------------------------------------------------------
class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d: a BatchNorm2d subclass whose forward is F.batch_norm, dropout and activation,
    after a rank check; fx traces into it (it is not a torch.nn leaf)."""

    def __init__(self, num_features: int, act_layer=nn.SiLU, apply_act: bool = True):
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = act_layer(inplace=True) if apply_act else nn.Identity()

    def forward(self, x):
        _assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        bn_training = True if self.training else (self.running_mean is None) and (self.running_var is None)
        x = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, bn_training, factor, self.eps)
        return self.act(self.drop(x))


class SqueezeExcite(nn.Module):
    """timm's SE: x.mean((2, 3), keepdim=True) -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate -> x * gate."""

    def __init__(self, chs: int, rd_channels: int, act_layer=nn.SiLU, gate_layer=nn.Sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_channels, 1, bias=True)
        self.act1 = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.act1(self.conv_reduce(x_se))
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, se_ratio: float):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=False)
        self.bn1 = BatchNormAct2d(cin)
        self.se = SqueezeExcite(cin, max(1, int(cin * se_ratio))) if se_ratio else nn.Identity()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, apply_act=False)
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidualSE(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, se_ratio: float):
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.se = SqueezeExcite(mid, max(1, int(cin * se_ratio)))
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, apply_act=False)
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = self.bn3(self.conv_pwl(self.se(x)))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class SelectAdaptivePool2d(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x):
        return self.flatten(self.pool(x))


class EfficientNet(nn.Module):
    """timm's efficientnet_b0 layout: stem 3x3/2 + BNAct, 7 stages of MBConv (k 3/5, SE 0.25), 1x1 head."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, depth: float = 1.0):
        super().__init__()
        ch = partial(_make_divisible, divisor=8)
        stages = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                  (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
        c = ch(32 * width)
        self.conv_stem = nn.Conv2d(in_channels, c, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(c)
        blocks = []
        for expand, k, stride, out, n in stages:
            out, stage = ch(out * width), []
            for i in range(max(1, round(n * depth))):
                s = stride if i == 0 else 1
                stage.append(DepthwiseSeparableConv(c, out, k, s, 0.25) if expand == 1 else
                             InvertedResidualSE(c, out, k, s, expand, 0.25))
                c = out
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch(1280 * width)
        self.conv_head = nn.Conv2d(c, self.num_features, 1, bias=False)
        self.bn2 = BatchNormAct2d(self.num_features)
        self.global_pool = SelectAdaptivePool2d()
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x))


@register_model
def timm_efficientnet_b0(in_channels: int = 3, num_classes: int = 1000, width: float = 1.0,
                         depth: float = 1.0) -> EfficientNet:
    return EfficientNet(num_classes, in_channels, width, depth)


# -- timm VGG ------------------------------------------------------------------------------------------------
class ConvMlp(nn.Module):
    """timm's VGG pre-logits: the two 4096-wide FC layers as 7x7 and 1x1 convs, with timm's shape check
    (inputs smaller than 7x7 are pooled up first): control flow on a tensor's shape, which fx cannot trace."""

    def __init__(self, in_features: int = 512, out_features: int = 4096, kernel_size: int = 7):
        super().__init__()
        self.input_kernel_size = kernel_size
        self.fc1 = nn.Conv2d(in_features, out_features, kernel_size, bias=True)
        self.act1 = nn.ReLU(True)
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Conv2d(out_features, out_features, 1, bias=True)
        self.act2 = nn.ReLU(True)

    def forward(self, x):
        if x.shape[-2] < self.input_kernel_size or x.shape[-1] < self.input_kernel_size:
            output_size = max(self.input_kernel_size, x.shape[-2]), max(self.input_kernel_size, x.shape[-1])
            x = F.adaptive_avg_pool2d(x, output_size)
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class VGG(nn.Module):
    """timm's vgg16: 13 3x3 convs in 5 stages with 2x2 max pools, ConvMlp pre-logits, pooled linear head."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = max(8, int(v * width))
                layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.pre_logits = ConvMlp(c, max(16, int(4096 * width)), 7)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                  nn.Linear(max(16, int(4096 * width)), num_classes))

    def forward(self, x):
        return self.head(self.pre_logits(self.features(x)))


@register_model
def timm_vgg16(in_channels: int = 3, num_classes: int = 1000, width: float = 1.0) -> VGG:
    return VGG(num_classes, in_channels, width)
