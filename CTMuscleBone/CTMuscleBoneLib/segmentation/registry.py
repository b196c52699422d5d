"""The model registry: folders of installed segmentation models, by name.

A model is a folder ``<name>/`` holding ``card.json`` and the weights file the card
names. Models are looked up in, first to last (the first folder holding a name wins):

1. the **user folder**: ``$CTMUSCLEBONE_MODELS`` if set, else ``~/.ctmusclebone/models``.
   :func:`install_model` copies models here;
2. the **bundled folders** (read-only, shipped with CTMuscleBone):
   ``$CTMUSCLEBONE_BUNDLED_MODELS`` (an ``os.pathsep``-separated list) if set, then
   ``Resources/Models`` found by walking up from this file (the source tree and an
   editable install: ``<repo>/CTMuscleBone/Resources/Models``; the installed Slicer
   extension: ``Resources/Models`` in the scripted-modules folder beside
   ``CTMuscleBoneLib``), then ``<sys.prefix>/share/ctmusclebone/models``
   (where a wheel may place data files).

Every model is checked before use: card schema and anatomy labels, weights file
SHA-256 against the card, tensor names and shapes against the network the card
describes (:mod:`CTMuscleBoneLib.segmentation.weights`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CTMuscleBoneError, ModelError
from .model_card import CARD_FILE, ModelCard

#: Environment variable naming the user models folder.
ENV_USER_MODELS = "CTMUSCLEBONE_MODELS"
#: Environment variable naming extra bundled (read-only) model folders.
ENV_BUNDLED_MODELS = "CTMUSCLEBONE_BUNDLED_MODELS"
#: Name of the model used when none is named.
DEFAULT_MODEL = "ctmusclebone-demo-synthetic"


def user_models_dir() -> Path:
    """The user models folder (may not exist yet)."""
    env = os.environ.get(ENV_USER_MODELS)
    return Path(env).expanduser() if env else Path.home() / ".ctmusclebone" / "models"


def bundled_models_dirs() -> list[Path]:
    """Existing bundled model folders, in search order."""
    out: list[Path] = []
    env = os.environ.get(ENV_BUNDLED_MODELS)
    if env:
        out += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "Resources" / "Models"
        if cand.is_dir():
            out.append(cand)
            break
    out.append(Path(sys.prefix) / "share" / "ctmusclebone" / "models")
    seen: list[Path] = []
    for p in out:
        if p.is_dir() and p.resolve() not in seen:
            seen.append(p.resolve())
    return seen


def search_dirs() -> list[tuple[Path, str]]:
    """(folder, 'user' | 'bundled') in lookup order; only folders that exist."""
    dirs: list[tuple[Path, str]] = []
    u = user_models_dir()
    if u.is_dir():
        dirs.append((u.resolve(), "user"))
    dirs += [(b, "bundled") for b in bundled_models_dirs() if b != u.resolve()]
    return dirs


@dataclass
class ModelEntry:
    """A model folder found by :func:`list_models`.

    ``card`` is None and ``problem`` says why when the card cannot be read.
    """

    name: str
    folder: Path
    source: str
    card: ModelCard | None
    problem: str | None = None
    shadowed: bool = False


def list_models() -> list[ModelEntry]:
    """Every model folder in the search folders (cards parsed, weights not checked)."""
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for folder, source in search_dirs():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not
                          p.name.startswith(".")):
            if not (sub / CARD_FILE).is_file():
                continue
            try:
                card = ModelCard.load(sub)
                entry = ModelEntry(card.name, sub, source, card)
            except CTMuscleBoneError as exc:
                entry = ModelEntry(sub.name, sub, source, None, problem=str(exc))
            entry.shadowed = entry.name in seen
            seen.add(entry.name)
            entries.append(entry)
    return entries


def find_model(name: str) -> Path:
    """Folder of the model called ``name`` (first in search order); ModelError if absent."""
    for folder, _ in search_dirs():
        cand = folder / name
        if (cand / CARD_FILE).is_file():
            return cand
    known = sorted({e.name for e in list_models()})
    raise ModelError(
        f"No model named '{name}' is installed (known: {', '.join(known) or 'none'}). "
        "Install one with `ctmusclebone models install PATH`."
    )


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if (p / CARD_FILE).is_file() or (p.is_file() and p.suffix == ".json"):
        return p if p.is_dir() else p.parent
    return find_model(str(name_or_path))


def check_model_folder(folder: str | os.PathLike[str]) -> ModelCard:
    """Validate a model folder fully: card, anatomy labels, SHA-256, tensor shapes.

    Returns the card; raises ModelError naming the first problem.
    """
    from .network import build_network
    from .weights import check_state_dict, read_weights

    card = ModelCard.load(folder)
    tensors = read_weights(card.weights_path, card.weights.sha256)
    try:
        network = build_network(card.architecture)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"Model '{card.name}': the architecture cannot be built: {exc}") from None
    check_state_dict(network, tensors)
    return card


def verify_model(name_or_path: str | os.PathLike[str]) -> ModelCard:
    """Check an installed model (by name) or a model folder; return its card."""
    return check_model_folder(_resolve(name_or_path))


def install_model(source: str | os.PathLike[str], models_dir: str | os.PathLike[str] | None = None,
                  overwrite: bool = False) -> ModelCard:
    """Validate a model and copy it into the user models folder, atomically.

    Parameters
    ----------
    source : path
        A model folder, or its ``card.json`` (the weights file must lie beside it).
    models_dir : path, optional
        Destination; default :func:`user_models_dir`.
    overwrite : bool
        Replace an installed model of the same name.

    Returns
    -------
    ModelCard
        The installed model's card (``folder`` = its new folder).
    """
    src = Path(source)
    if src.is_file():
        src = src.parent
    if not src.is_dir():
        raise ModelError(f"{source} is neither a model folder nor a model card file.")
    card = check_model_folder(src)
    dest_root = Path(models_dir) if models_dir is not None else user_models_dir()
    dest_root.mkdir(parents=True, exist_ok=True)
    dest = dest_root / card.name
    if dest.exists() and not overwrite:
        raise ModelError(
            f"A model named '{card.name}' is already installed at {dest}; pass overwrite "
            "(--force) to replace it."
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{card.name}.", dir=dest_root))
    try:
        shutil.copy2(src / CARD_FILE, tmp / CARD_FILE)
        shutil.copy2(card.weights_path, tmp / card.weights.file)
        check_model_folder(tmp)  # the copy is what will be used
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{card.name}.old.", dir=dest_root))
            os.replace(dest, old / card.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelCard.load(dest)


#: Loaded models by (folder, device, card file stamp), each with the stamp of its weights
#: file: a model is read and its weights hashed once per process, not on every call.
_MODEL_CACHE: dict[tuple, tuple] = {}
_MODEL_CACHE_SIZE = 2


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(modification time, size) of a file; None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def load_model(name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, device: str = "cpu",
               *, cache: bool = True):
    """Load a model for inference: ``(card, network)`` with verified weights.

    The network is in ``eval`` mode on ``device``; Monte-Carlo dropout is switched on
    by the inference code, not here. With ``cache`` (the default) the last
    :data:`_MODEL_CACHE_SIZE` models are kept: a second call for the same folder and
    device returns the same objects without reading the card or reading and hashing
    the weights again, as long as neither the card nor the weights file changed on disk
    (size and modification time).
    """
    folder = _resolve(name_or_path).resolve()
    if not cache:
        return _load_model_uncached(ModelCard.load(folder), device)
    key = (str(folder), str(device), _file_stamp(folder / CARD_FILE))
    hit = _MODEL_CACHE.get(key)
    if hit is not None:
        loaded, weights_stamp = hit
        if _file_stamp(loaded[0].weights_path) == weights_stamp:
            return loaded
    card = ModelCard.load(folder)
    weights_stamp = _file_stamp(card.weights_path)
    loaded = _load_model_uncached(card, device)
    _MODEL_CACHE.pop(key, None)
    _MODEL_CACHE[key] = (loaded, weights_stamp)
    while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
        _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
    return loaded


def clear_model_cache() -> None:
    """Forget every cached model (the next :func:`load_model` reads from disk)."""
    _MODEL_CACHE.clear()


def _load_model_uncached(card: ModelCard, device: str):
    from .network import build_network
    from .weights import load_weights

    try:
        network = build_network(card.architecture)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"Model '{card.name}': the architecture cannot be built: {exc}") from None
    load_weights(network, card.weights_path, card.weights.sha256)
    network.eval()
    return card, network.to(device)
