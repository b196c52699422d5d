"""Model cards: the JSON file that says what a segmentation model is and how to run it.

A model folder holds ``card.json`` and the weights (``model.safetensors``). The card
(schema ``ctmusclebone-model-card/1``) gives:

* ``name`` (folder-safe: lower case letters, digits, ``.``, ``_``, ``-``), ``version``,
  ``description``, ``intended_use``, ``license``;
* ``synthetic`` (trained on synthetic phantoms only) and ``clinical_use_warning``,
  shown with every result of the model;
* ``labels``: output channel -> anatomy key (:mod:`CTMuscleBoneLib.anatomy`); channel 0
  is ``"background"``, channels are 0..C-1 without gaps. A card naming a structure the
  anatomy table does not know is refused;
* ``input`` (:class:`~CTMuscleBoneLib.segmentation.config.InputConfig`: spacing, HU
  window, ...), ``architecture`` (:class:`~CTMuscleBoneLib.segmentation.config.NetworkConfig`)
  and ``inference`` (:class:`~CTMuscleBoneLib.segmentation.config.InferenceConfig`:
  Monte-Carlo samples, ...);
* ``training``: ``data`` (what it was trained on), ``recipe`` (the training settings),
  ``seed`` and ``command`` (one command that reproduces the weights);
* ``validation``: free-form figures, by convention ``{"data": ..., "structures":
  {key: {"dice_mean": ..., "assd_mean_mm": ...}}}``;
* ``weights``: ``{"file": "model.safetensors", "sha256": ..., "format": "safetensors"}``.

Every problem is a :class:`~CTMuscleBoneLib.errors.ModelError` naming the field.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import anatomy
from ..atomic import atomic_write_text
from ..errors import ModelError
from .config import InferenceConfig, InputConfig, NetworkConfig

SCHEMA = "ctmusclebone-model-card/1"
CARD_FILE = "card.json"
BACKGROUND = "background"

#: Warning every model trained on synthetic phantoms carries.
SYNTHETIC_WARNING = (
    "Demo model trained on synthetic phantoms - not for clinical images. Its labels on a "
    "patient CT are meaningless; train real weights with `ctmusclebone train`."
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class TrainingInfo:
    """How the weights were made."""

    data: str
    recipe: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "recipe": self.recipe, "seed": self.seed,
                "command": self.command}


@dataclass
class WeightsInfo:
    """The weights file of a model folder and its checksum."""

    file: str
    sha256: str
    format: str = "safetensors"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "format": self.format}


@dataclass
class ModelCard:
    """A validated model card. Build with :meth:`from_dict` or :meth:`load`.

    Attributes
    ----------
    labels : dict of int to str
        Output channel -> anatomy key; channel 0 is ``"background"``.
    folder : Path or None
        Folder the card was loaded from (where the weights file lies), if any.
    """

    name: str
    version: str
    description: str
    intended_use: str
    synthetic: bool
    clinical_use_warning: str
    labels: dict[int, str]
    input: InputConfig
    architecture: NetworkConfig
    inference: InferenceConfig
    training: TrainingInfo
    validation: dict[str, Any]
    license: str
    weights: WeightsInfo
    folder: Path | None = None

    # -- derived facts -----------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        """Number of network output channels (background included)."""
        return len(self.labels)

    @property
    def structure_keys(self) -> list[str]:
        """Anatomy keys of channels 1..C-1, in channel order."""
        return [self.labels[c] for c in sorted(self.labels) if c != 0]

    def label_values(self) -> dict[int, int]:
        """Output channel -> canonical label value (channel 0 -> 0)."""
        return {c: (0 if c == 0 else anatomy.structure(k).label_value)
                for c, k in self.labels.items()}

    @property
    def weights_path(self) -> Path:
        """Path of the weights file (needs :attr:`folder`)."""
        if self.folder is None:
            raise ModelError(f"Model card '{self.name}' was not loaded from a folder; "
                             "its weights file cannot be located.")
        return self.folder / self.weights.file

    # -- (de)serialisation ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, folder: Path | None = None) -> ModelCard:
        """Validate a card dictionary (parsed JSON); raise ModelError on any problem."""
        if not isinstance(d, dict):
            raise ModelError("Model card must be a JSON object.")
        where = f"Model card {d.get('name', '?')!r}"
        schema = d.get("schema")
        if schema != SCHEMA:
            raise ModelError(f"{where}: schema is {schema!r}, expected {SCHEMA!r}.")
        for key in ("name", "version", "description", "intended_use", "license",
                    "clinical_use_warning"):
            v = d.get(key)
            if not isinstance(v, str) or not v.strip():
                raise ModelError(f"{where}: field '{key}' is missing or empty.")
        if not _NAME_RE.match(d["name"]):
            raise ModelError(
                f"{where}: name must be lower-case letters, digits, '.', '_' or '-' "
                "(it becomes a folder name)."
            )
        if not isinstance(d.get("synthetic"), bool):
            raise ModelError(f"{where}: field 'synthetic' must be true or false.")
        labels = _parse_labels(d.get("labels"), where)
        input_cfg = _sub(InputConfig, d, "input", where)
        arch = _sub(NetworkConfig, d, "architecture", where)
        inference = _sub(InferenceConfig, d, "inference", where)
        _check_arch_labels(arch, len(labels), where)
        try:
            inference.check_against(arch)
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from None
        t = d.get("training")
        if not isinstance(t, dict) or not isinstance(t.get("data"), str):
            raise ModelError(f"{where}: field 'training' must be an object with 'data' "
                             "(what the model was trained on).")
        seed = t.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ModelError(f"{where}: training.seed must be an integer or null.")
        training = TrainingInfo(data=t["data"], recipe=dict(t.get("recipe") or {}), seed=seed,
                                command=str(t.get("command") or ""))
        validation = d.get("validation", {})
        if not isinstance(validation, dict):
            raise ModelError(f"{where}: field 'validation' must be an object.")
        w = d.get("weights")
        if not isinstance(w, dict):
            raise ModelError(f"{where}: field 'weights' must be an object "
                             "{file, sha256, format}.")
        wfile, sha, fmt = w.get("file"), w.get("sha256"), w.get("format", "safetensors")
        if not isinstance(wfile, str) or not wfile or Path(wfile).name != wfile \
                or wfile in (".", ".."):
            raise ModelError(f"{where}: weights.file must be a plain file name in the model "
                             f"folder, got {wfile!r}.")
        if fmt != "safetensors" or not wfile.endswith(".safetensors"):
            raise ModelError(f"{where}: weights must be a '.safetensors' file with format "
                             f"'safetensors' (got {wfile!r}, {fmt!r}); pickled weights are "
                             "not accepted.")
        if not isinstance(sha, str) or not _SHA_RE.match(sha.lower()):
            raise ModelError(f"{where}: weights.sha256 must be 64 hexadecimal digits.")
        return cls(
            name=d["name"], version=d["version"], description=d["description"],
            intended_use=d["intended_use"], synthetic=d["synthetic"],
            clinical_use_warning=d["clinical_use_warning"], labels=labels, input=input_cfg,
            architecture=arch, inference=inference, training=training, validation=validation,
            license=d["license"], weights=WeightsInfo(wfile, sha.lower(), fmt), folder=folder,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "intended_use": self.intended_use,
            "synthetic": self.synthetic,
            "clinical_use_warning": self.clinical_use_warning,
            "labels": {str(c): k for c, k in sorted(self.labels.items())},
            "input": self.input.to_dict(),
            "architecture": self.architecture.to_dict(),
            "inference": self.inference.to_dict(),
            "training": self.training.to_dict(),
            "validation": self.validation,
            "license": self.license,
            "weights": self.weights.to_dict(),
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read and validate ``card.json`` (or the card of a model folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / CARD_FILE
        if not p.is_file():
            raise ModelError(f"No model card at {p}: a model folder needs a '{CARD_FILE}'.")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"Model card {p} is not valid JSON: {exc}") from None
        return cls.from_dict(d, folder=p.parent.resolve())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the card as JSON atomically (to ``path`` or ``path/card.json``)."""
        p = Path(path)
        if p.is_dir() or p.suffix != ".json":
            p = p / CARD_FILE
        atomic_write_text(p, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return p

    def summary(self) -> str:
        """One line: name, version, structures, synthetic or not."""
        kind = "SYNTHETIC DEMO" if self.synthetic else "trained"
        return (f"{self.name} {self.version} ({kind}; {len(self.structure_keys)} structures; "
                f"spacing {_fmt_spacing(self.input)})")


def _fmt_spacing(input_cfg: InputConfig) -> str:
    sp = getattr(input_cfg, "spacing_mm", None)
    if sp is None:
        return "native"
    return "x".join(f"{s:g}" for s in sp) + " mm"


def _parse_labels(raw: Any, where: str) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{where}: field 'labels' must map output channels to anatomy keys.")
    labels: dict[int, str] = {}
    for c, k in raw.items():
        try:
            ch = int(c)
        except (TypeError, ValueError):
            raise ModelError(f"{where}: label channel {c!r} is not an integer.") from None
        if not isinstance(k, str):
            raise ModelError(f"{where}: label of channel {ch} must be an anatomy key string.")
        labels[ch] = k
    if sorted(labels) != list(range(len(labels))):
        raise ModelError(f"{where}: label channels must be 0..{len(labels) - 1} without gaps, "
                         f"got {sorted(labels)}.")
    if labels[0] != BACKGROUND:
        raise ModelError(f"{where}: channel 0 must be 'background', got {labels[0]!r}.")
    if len(labels) < 2:
        raise ModelError(f"{where}: a model needs at least one structure besides background.")
    seen: set[str] = set()
    for ch in sorted(labels)[1:]:
        key = labels[ch]
        if key not in anatomy.BY_KEY:
            raise ModelError(
                f"{where}: channel {ch} is '{key}', which is not in the CTMuscleBone anatomy "
                "table; rename it to an anatomy key (see CTMuscleBoneLib.anatomy) or extend "
                "the table."
            )
        if key in seen:
            raise ModelError(f"{where}: structure '{key}' appears on two channels.")
        seen.add(key)
    return labels


def _sub(cls: Any, d: dict[str, Any], key: str, where: str) -> Any:
    raw = d.get(key)
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: field '{key}' must be an object.")
    try:
        return cls.from_dict(raw)
    except ModelError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{where}: field '{key}' is invalid: {exc}") from None


def _check_arch_labels(arch: NetworkConfig, n_labels: int, where: str) -> None:
    out = arch.out_channels
    if out != n_labels:
        raise ModelError(
            f"{where}: the architecture has {out} output channels but 'labels' lists "
            f"{n_labels} (background included)."
        )
