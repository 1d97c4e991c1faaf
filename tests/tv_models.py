"""torchvision's VGG and ResNet-18, rebuilt in plain torch (torchvision cannot be imported beside
torch 2.13 here).

Same module classes, registration order and names as ``torchvision.models.vgg11/vgg13/
resnet18`` (torchvision 0.2x ``vgg.py`` / ``resnet.py``), so ``named_modules()`` indices --
WeightWatcher's layer ids -- and state_dict keys match: VGG-11 features.0 = 2, classifier.6 =
31; ResNet-18 conv1 = 1, fc = 67.  Random init as torchvision's (kaiming-normal convs, N(0,
0.01) linears, BN 1/0), seeded by the caller.  ``width`` scales every channel count and
``hidden`` the VGG classifier (ids do not depend on sizes; the defaults are torchvision's).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["vgg11", "vgg13", "resnet18", "VGG", "ResNet", "BasicBlock"]

_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


class VGG(nn.Module):
    def __init__(self, features: nn.Module, num_classes: int = 1000, dropout: float = 0.5,
                 last: int = 512, hidden: int = 4096):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(last * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes))
        _init(self)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _features(cfg, width: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            c = max(1, int(v * width))
            layers += [nn.Conv2d(cin, c, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = c
    return nn.Sequential(*layers)


def _vgg(cfg: str, width: float, hidden: int, num_classes: int, weights) -> VGG:
    # weights=... (a pretrained tag) is accepted and ignored: random init only, no downloads
    return VGG(_features(_CFGS[cfg], width), num_classes=num_classes,
               last=max(1, int(512 * width)), hidden=hidden)


def vgg11(weights=None, *, width: float = 1.0, hidden: int = 4096, num_classes: int = 1000):
    return _vgg("A", width, hidden, num_classes, weights)


def vgg13(weights=None, *, width: float = 1.0, hidden: int = 4096, num_classes: int = 1000):
    return _vgg("B", width, hidden, num_classes, weights)


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, groups=1, bias=False,
                     dilation=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idt)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        w = [max(1, int(c * width)) for c in (64, 128, 256, 512)]
        self.inplanes = w[0]
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(w[0], layers[0])
        self.layer2 = self._make_layer(w[1], layers[1], stride=2)
        self.layer3 = self._make_layer(w[2], layers[2], stride=2)
        self.layer4 = self._make_layer(w[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(weights=None, *, width: float = 1.0, num_classes: int = 1000):
    return ResNet((2, 2, 2, 2), num_classes=num_classes, width=width)
