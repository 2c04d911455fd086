"""The zoo: VGG-style CNNs, CIFAR-style ResNets and MobileNetV2, for any input size and channel count.

Every builder takes ``in_channels`` and ``num_classes`` and ends in global average pooling, so the same model runs
on 28x28 Fashion-MNIST, 32x32 CIFAR-10 or 8x8 digits.
"""

from __future__ import annotations

from torch import nn

from tessera.models.registry import register_model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGG(nn.Module):
    """Stacks of 3x3 conv-BN-ReLU with max-pooling between stages, then a linear classifier."""

    def __init__(self, stages: list[list[int]], in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, stage in enumerate(stages):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for width in stage:
                layers += _conv_bn(c, width)
                c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))


@register_model
def vgg6(in_channels: int = 1, num_classes: int = 10, width: int = 32, dropout: float = 0.0) -> VGG:
    """Six 3x3 convs in three stages (w, w | 2w, 2w | 4w, 4w): the Fashion-MNIST workhorse."""
    w = width
    return VGG([[w, w], [2 * w, 2 * w], [4 * w, 4 * w]], in_channels, num_classes, dropout)


@register_model
def vgg_tiny(in_channels: int = 1, num_classes: int = 10, width: int = 8) -> VGG:
    """Four 3x3 convs, a few thousand weights: for unit tests."""
    return VGG([[width, width], [2 * width, 2 * width]], in_channels, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1x1 conv + BN when the shape changes (option B)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (He et al. 2016, section 4.2): 6n+2 layers, widths w, 2w, 4w."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError("depth must be 6n+2")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn(in_channels, width))
        blocks: list[nn.Module] = []
        c = width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            for j in range(n):
                blocks.append(BasicBlock(c, w, 2 if (j == 0 and i > 0) else 1))
                c = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


@register_model
def resnet20(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> CifarResNet:
    return CifarResNet(20, in_channels, num_classes, width)


@register_model
def resnet32(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> CifarResNet:
    return CifarResNet(32, in_channels, num_classes, width)


@register_model
def resnet56(in_channels: int = 3, num_classes: int = 10, width: int = 16) -> CifarResNet:
    return CifarResNet(56, in_channels, num_classes, width)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR-style MobileNetV2 (stride-1 stem, first strides removed for small inputs): 1x1-heavy, for UBP."""

    # (expansion, out channels, repeats, stride) as in Sandler et al. 2018, strides adapted to 32x32 inputs
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c = max(8, int(32 * width))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU6(inplace=True)]
        for t, ch, n, s in self.SETTINGS:
            out = max(8, int(ch * width))
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        last = max(8, int(1280 * width))
        layers += [nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model
def mobilenetv2(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(in_channels, num_classes, width)
