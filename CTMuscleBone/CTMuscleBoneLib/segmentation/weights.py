"""Network weights in safetensors files: save, checksum, check against a network, load.

Weights are never unpickled: :mod:`safetensors` stores raw tensors and a JSON header,
so reading a file cannot run code (unlike ``torch.load`` of a pickle). Before a file is
used its SHA-256 is compared with the model card, and every tensor name and shape with
the network the card describes; the first difference is named in a
:class:`~CTMuscleBoneLib.errors.ModelError`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..errors import ModelError

WEIGHTS_FORMAT = "safetensors"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_for_saving(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's parameters and buffers as contiguous CPU tensors.

    A ``DistributedDataParallel`` / ``torch.compile`` wrapper is unwrapped first, so
    tensor names are those of the bare network.
    """
    net = getattr(network, "module", network)
    net = getattr(net, "_orig_mod", net)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}


def save_weights(network: torch.nn.Module, path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> str:
    """Write the network's weights to a safetensors file atomically; return its SHA-256."""
    tensors = state_dict_for_saving(network)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})
    return sha256_file(path)


def verify_checksum(path: str | os.PathLike[str], expected_sha256: str) -> None:
    """Raise ModelError when the file's SHA-256 differs from ``expected_sha256``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Weights file {path} does not exist; reinstall the model.")
    actual = sha256_file(path)
    if actual.lower() != expected_sha256.strip().lower():
        raise ModelError(
            f"Weights file {path.name} does not match its model card: SHA-256 {actual} "
            f"!= {expected_sha256}. The file is corrupt or was replaced; reinstall the model."
        )


def read_weights(path: str | os.PathLike[str],
                 expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file to CPU tensors, after checking its SHA-256 when given."""
    path = Path(path)
    if expected_sha256 is not None:
        verify_checksum(path, expected_sha256)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"Weights file {path.name} is not a valid safetensors file: {exc}") from None


def check_state_dict(network: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Raise ModelError naming the first tensor whose name or shape does not match.

    Parameters
    ----------
    network : torch.nn.Module
        The network built from the model card's architecture.
    tensors : dict of str to torch.Tensor
        Tensors read from the weights file.
    """
    expected = getattr(network, "module", network).state_dict()
    for name, ref in expected.items():
        if name not in tensors:
            raise ModelError(
                f"Weights do not fit the architecture on the model card: tensor '{name}' "
                f"(shape {tuple(ref.shape)}) is missing from the weights file."
            )
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise ModelError(
                f"Weights do not fit the architecture on the model card: tensor '{name}' has "
                f"shape {tuple(got.shape)} in the file but the network expects "
                f"{tuple(ref.shape)}."
            )
        if got.dtype.is_floating_point != ref.dtype.is_floating_point:
            raise ModelError(
                f"Weights do not fit the architecture on the model card: tensor '{name}' is "
                f"{got.dtype} in the file but the network expects {ref.dtype}."
            )
    for name in tensors:
        if name not in expected:
            raise ModelError(
                f"Weights do not fit the architecture on the model card: the file has an "
                f"extra tensor '{name}' that the network does not have."
            )


def load_weights(network: torch.nn.Module, path: str | os.PathLike[str],
                 expected_sha256: str | None = None) -> torch.nn.Module:
    """Check and load a safetensors file into ``network`` (in place); return it."""
    tensors = read_weights(path, expected_sha256)
    check_state_dict(network, tensors)
    target = getattr(network, "module", network)
    ref = target.state_dict()
    target.load_state_dict({k: v.to(ref[k].dtype) for k, v in tensors.items()}, strict=True)
    return network
