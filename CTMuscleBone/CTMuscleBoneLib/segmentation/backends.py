"""Back ends that run the deterministic part of the network (``predict(backend=...)``).

* ``torch`` (default): :meth:`BayesianUNet.forward_features` in torch (any device).
* ``openvino``: the same part converted once per window-batch shape by OpenVINO
  (``openvino.convert_model`` straight from the torch module, no file written) and run
  by its CPU plugin in float32 (``INFERENCE_PRECISION_HINT f32``: no bf16 or int8
  rewriting, so the labels stay those of torch up to float rounding). CPU only, and only
  for models whose stochastic part is pointwise (``dropout_placement='head'``): then
  the whole U-Net except dropout and the 1x1 output convolution runs once per window,
  and the Monte-Carlo head stays in torch/numpy (:func:`.inference.pointwise_mc_statistics`).
  Measured against torch eager on this project's benchmark CPU in docs/performance.md.

OpenVINO is optional (``pip install openvino``; the ``dev`` and ``bench`` extras hold
it); asking for it without the package raises a ModelError that says so.
"""

from __future__ import annotations

import time
import warnings
import weakref
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .config import BACKENDS
from .network import BayesianUNet, Features


class _FeatureTensor(torch.nn.Module):
    """``forward_features(x).x`` as a plain module (what OpenVINO converts)."""

    def __init__(self, model: BayesianUNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x).x


class OpenVINOFeatures:
    """The deterministic part of a head-placement network, compiled for the CPU.

    Parameters
    ----------
    model : BayesianUNet
        In eval mode; its weights are copied into the compiled model when a window
        shape is first seen (later weight changes are not picked up).
    threads : int, optional
        CPU threads OpenVINO may use (default: torch's ``get_num_threads()``).

    Calling it with a float32 tensor ``(B, in_channels, *patch)`` returns the
    :class:`~.network.Features` that ``model.forward_features`` would return.
    """

    def __init__(self, model: BayesianUNet, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ModelError("The 'openvino' back end needs the openvino package "
                             "(pip install openvino); or use backend 'torch'.") from None
        if not model.pointwise_tail:
            raise ModelError(
                "The 'openvino' back end runs the deterministic part of models whose "
                "dropout sits only before the output convolution (dropout_placement "
                f"'head'); this model's stochastic part is '{model.stochastic_steps()}'. "
                "Use backend 'torch'.")
        self._ov = ov
        self._core = ov.Core()
        self._module = _FeatureTensor(model).eval()
        self._threads = int(threads or torch.get_num_threads())
        self._compiled: dict[tuple[int, ...], Any] = {}
        self.compile_seconds = 0.0

    def _compiled_for(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in self._compiled:
            t = time.perf_counter()
            with torch.no_grad(), warnings.catch_warnings():
                # the converter traces with torch.jit, which warns that it is deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                ov_model = self._ov.convert_model(self._module, example_input=x,
                                                  input=[key])
            self._compiled[key] = self._core.compile_model(
                ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                  "INFERENCE_NUM_THREADS": self._threads})
            self.compile_seconds += time.perf_counter() - t
        return self._compiled[key]

    def __call__(self, x: torch.Tensor) -> Features:
        if x.device.type != "cpu":
            raise ModelError("The 'openvino' back end runs on the CPU; the input is on "
                             f"{x.device}. Use backend 'torch' for a GPU.")
        compiled = self._compiled_for(x)
        y = compiled(np.ascontiguousarray(x.numpy(), dtype=np.float32))[0]
        return Features(torch.from_numpy(np.array(y, dtype=np.float32, copy=True)), [],
                        self._module.model.first_stochastic_step)


#: Compiled runners kept per network (conversion and compilation cost seconds to a
#: minute for a clinical-size 3-D network), with the weights' fingerprint they were
#: compiled from; dropped with the network.
_RUNNERS: weakref.WeakKeyDictionary[BayesianUNet, tuple[tuple[int, ...], OpenVINOFeatures]] \
    = weakref.WeakKeyDictionary()


def _weights_fingerprint(model: BayesianUNet) -> tuple[int, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple(v for t in tensors for v in (id(t), t.data_ptr(), t._version))


def feature_runner(model: BayesianUNet, backend: str, device: torch.device) -> Any:
    """A callable ``x -> Features`` for the named back end on ``device``.

    OpenVINO runners are reused for the same network while its weights are unchanged
    (a second ``predict`` does not convert and compile again).

    Raises ModelError when the back end is unknown, not installed, or cannot serve this
    model or device (the message names the reason and the alternative).
    """
    if backend == "torch":
        return model.forward_features
    if backend == "openvino":
        if device.type != "cpu":
            raise ModelError(f"The 'openvino' back end runs on the CPU, not on {device}. "
                             "Use backend 'torch' with a GPU.")
        fp = _weights_fingerprint(model)
        hit = _RUNNERS.get(model)
        if hit is not None and hit[0] == fp:
            return hit[1]
        runner = OpenVINOFeatures(model)
        _RUNNERS[model] = (fp, runner)
        return runner
    raise ModelError(f"Unknown inference back end {backend!r}; allowed: {BACKENDS}.")
