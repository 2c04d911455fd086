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
