"""The Bayesian U-Net (Hiasa et al., IEEE TMI 2020) built from MONAI blocks.

Architecture (reference: yuta-hi/bayesian_unet, Chainer, MIT licence): ``L`` resolution
levels with ``channels[l]`` features; each block is 2 x (3^d convolution, norm, act)
(MONAI :class:`~monai.networks.blocks.Convolution`, or residual units when
``num_res_units > 0``); max-pool down, transposed convolution up (MONAI
:class:`~monai.networks.blocks.UpSample`, ``mode='deconv'``), skip connections by
concatenation, 1 x 1 output convolution to ``out_channels`` logits. Dropout
(:class:`torch.nn.Dropout`, element-wise as the reference's ``F.dropout``) sits after the
blocks chosen by ``dropout_placement``.

Monte-Carlo dropout: :meth:`BayesianUNet.set_mc_dropout` keeps the dropout modules in
training mode (random masks) while every other module, BatchNorm included, stays in
eval mode. For cheap sampling the forward pass is split at the first dropout layer:
:meth:`BayesianUNet.forward_features` runs the deterministic part once and
:meth:`BayesianUNet.forward_stochastic` repeats its result ``n`` times along the batch
axis and runs only the rest.

Tensors are ``(batch, channels, *spatial)``; spatial sizes must be multiples of
``NetworkConfig.total_stride``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers.factories import Pool
from torch import nn

from .config import NetworkConfig

_ACT = {"relu": "RELU", "leakyrelu": "LEAKYRELU", "prelu": "PRELU"}


@dataclass
class Features:
    """Network state at the first stochastic layer.

    Attributes
    ----------
    x : torch.Tensor, (B, C, *spatial)
        Current activation (input of the first dropout layer).
    skips : list of torch.Tensor
        Encoder outputs still needed by the remaining decoder blocks (finest first).
    step : int
        Index of the next step to run.
    """

    x: torch.Tensor
    skips: list[torch.Tensor]
    step: int

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    def select(self, index: slice) -> Features:
        """The features of a slice of the batch (views, no copy)."""
        return Features(self.x[index], [s[index] for s in self.skips], self.step)


def _block(cfg: NetworkConfig, c_in: int, c_out: int) -> nn.Module:
    act = _ACT[cfg.act]
    norm = cfg.norm.upper() if cfg.norm else None
    if cfg.num_res_units > 0:
        units = [
            ResidualUnit(cfg.spatial_dims, c_in if i == 0 else c_out, c_out, subunits=2,
                         act=act, norm=norm, adn_ordering="NA")
            for i in range(cfg.num_res_units)
        ]
        return nn.Sequential(*units)
    return nn.Sequential(
        Convolution(cfg.spatial_dims, c_in, c_out, kernel_size=3, act=act, norm=norm,
                    adn_ordering="NA"),
        Convolution(cfg.spatial_dims, c_out, c_out, kernel_size=3, act=act, norm=norm,
                    adn_ordering="NA"),
    )


class BayesianUNet(nn.Module):
    """U-Net with Monte-Carlo dropout, configured by :class:`NetworkConfig`.

    Parameters
    ----------
    cfg : NetworkConfig

    Notes
    -----
    State-dict keys: ``encoders.{l}``, ``pools.{l}``, ``ups.{l}``, ``decoders.{l}``,
    ``head``; dropout layers have no parameters. ``forward(x)`` returns logits
    ``(B, out_channels, *spatial)``.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.channels
        n_levels = len(ch)
        d = cfg.spatial_dims
        self.encoders = nn.ModuleList(
            [_block(cfg, cfg.in_channels if i == 0 else ch[i - 1], ch[i])
             for i in range(n_levels)]
        )
        self.pools = nn.ModuleList(
            [Pool[Pool.MAX, d](kernel_size=s, stride=s) for s in cfg.strides]
        )
        self.ups = nn.ModuleList(
            [UpSample(d, ch[i + 1], ch[i], scale_factor=cfg.strides[i], mode="deconv")
             for i in range(n_levels - 1)]
        )
        self.decoders = nn.ModuleList(
            [_block(cfg, 2 * ch[i], ch[i]) for i in range(n_levels - 1)]
        )
        self.head = Convolution(d, ch[0], cfg.out_channels, kernel_size=1, conv_only=True)

        # Steps in execution order: ("enc", l), ("dec", l), ("drop", name), ("head", 0).
        placement = cfg.dropout_placement
        steps: list[tuple[str, int | str]] = []
        for i in range(n_levels):
            steps.append(("enc", i))
            if placement == "all" or (placement == "bottleneck_decoder" and i == n_levels - 1):
                steps.append(("drop", f"enc{i}"))
        for i in reversed(range(n_levels - 1)):
            steps.append(("dec", i))
            if placement in ("all", "decoder", "bottleneck_decoder") or (
                placement == "head" and i == 0
            ):
                steps.append(("drop", f"dec{i}"))
        steps.append(("head", 0))
        self._steps = steps
        self.dropouts = nn.ModuleDict(
            {str(name): nn.Dropout(p=cfg.dropout_p) for kind, name in steps if kind == "drop"}
        )
        self._first_stochastic = next(i for i, (k, _) in enumerate(steps) if k == "drop")
        self._mc = False

    # -- modes -----------------------------------------------------------------------
    @property
    def mc_dropout(self) -> bool:
        """True while dropout stays active in eval mode (Monte-Carlo sampling)."""
        return self._mc

    def set_mc_dropout(self, enabled: bool) -> BayesianUNet:
        """Switch Monte-Carlo dropout on or off; only dropout modules change mode.

        With ``enabled`` the dropout modules are put in training mode (random masks)
        whatever the mode of the rest of the network; BatchNorm keeps its mode (eval
        at inference, running statistics). ``model.eval()`` later keeps MC dropout on.
        """
        self._mc = bool(enabled)
        for m in self.dropouts.values():
            m.train(self._mc or self.training)
        return self

    def train(self, mode: bool = True) -> BayesianUNet:
        super().train(mode)
        if getattr(self, "_mc", False):
            for m in self.dropouts.values():
                m.train(True)
        return self

    @property
    def dropout_layers(self) -> list[nn.Dropout]:
        return list(self.dropouts.values())

    # -- forward ---------------------------------------------------------------------
    def _run(self, x: torch.Tensor, skips: list[torch.Tensor], start: int, stop: int
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = list(skips)
        for kind, arg in self._steps[start:stop]:
            if kind == "enc":
                i = int(arg)
                if i > 0:
                    skips.append(x)
                    x = self.pools[i - 1](x)
                x = self.encoders[i](x)
            elif kind == "drop":
                x = self.dropouts[str(arg)](x)
            elif kind == "dec":
                i = int(arg)
                x = self.ups[i](x)
                x = self.decoders[i](torch.cat([skips.pop(), x], dim=1))
            else:
                x = self._head(x)
        return x, skips

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 output convolution as a matrix product (same maths, much faster on CPU
        than a 1x1 ``conv3d``)."""
        conv = self.head.conv
        w = conv.weight.reshape(conv.weight.shape[0], -1)
        y = torch.matmul(w, x.reshape(x.shape[0], x.shape[1], -1))
        if conv.bias is not None:
            y = y + conv.bias[:, None]
        return y.reshape(x.shape[0], w.shape[0], *x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` of input ``(B, in_channels, *spatial)``."""
        out, _ = self._run(x, [], 0, len(self._steps))
        return out

    def forward_features(self, x: torch.Tensor) -> Features:
        """Run the deterministic part (everything before the first dropout layer).

        Parameters
        ----------
        x : torch.Tensor, (B, in_channels, *spatial)

        Returns
        -------
        Features
            To pass to :meth:`forward_stochastic`.
        """
        y, skips = self._run(x, [], 0, self._first_stochastic)
        return Features(y, skips, self._first_stochastic)

    def forward_stochastic(self, features: Features, n_samples: int) -> torch.Tensor:
        """Run the part from the first dropout layer on, ``n_samples`` times.

        The features are repeated ``n_samples`` times along the batch axis (sample-major)
        and go through the remaining layers in one batch, so each sample draws its own
        dropout masks when MC dropout is on.

        Returns
        -------
        torch.Tensor, (n_samples, B, out_channels, *spatial)
            Logits.
        """
        n = int(n_samples)
        b = features.batch_size

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).expand(n, *t.shape).reshape(n * t.shape[0], *t.shape[1:])

        y, _ = self._run(rep(features.x), [rep(s) for s in features.skips], features.step,
                         len(self._steps))
        return y.reshape(n, b, *y.shape[1:])

    @property
    def first_stochastic_step(self) -> int:
        """Index of the first step after the deterministic part (``Features.step``)."""
        return self._first_stochastic

    @property
    def pointwise_tail(self) -> bool:
        """True when the stochastic part is only dropout + the 1x1 output convolution.

        That is the ``head`` placement: each voxel's Monte-Carlo samples then depend on
        that voxel's features alone, so they can be drawn voxel chunk by voxel chunk
        (:func:`~CTMuscleBoneLib.segmentation.inference.pointwise_mc_statistics`).
        """
        return [k for k, _ in self._steps[self._first_stochastic:]] == ["drop", "head"]

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight ``(out_channels, C)`` and bias ``(out_channels,)`` of the 1x1 output
        convolution (the matrix product of :meth:`_head`)."""
        conv = self.head.conv
        return conv.weight.reshape(conv.weight.shape[0], -1), conv.bias

    def stochastic_steps(self) -> str:
        """A short description of which steps are stochastic (for logs and reports)."""
        names = [f"{k}{a}" for k, a in self._steps[self._first_stochastic:]]
        return " -> ".join(names)


def build_network(cfg: NetworkConfig) -> BayesianUNet:
    """Build the (untrained) network for a configuration."""
    return BayesianUNet(cfg)
