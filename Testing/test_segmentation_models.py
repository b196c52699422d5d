"""Model cards, safetensors weights, the model registry, the models CLI and evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("safetensors")

from CTMuscleBoneLib.cli.main import main  # noqa: E402
from CTMuscleBoneLib.errors import InputError, ModelError  # noqa: E402
from CTMuscleBoneLib.image import Geometry, LabelMap  # noqa: E402
from CTMuscleBoneLib.segmentation import registry  # noqa: E402
from CTMuscleBoneLib.segmentation.evaluate import (  # noqa: E402
    StructureScore,
    average_symmetric_surface_distance,
    dice,
    evaluate_label_maps,
    failure_detection_auroc,
)
from CTMuscleBoneLib.segmentation.model_card import ModelCard  # noqa: E402
from CTMuscleBoneLib.segmentation.network import build_network  # noqa: E402
from CTMuscleBoneLib.segmentation.training.train import (  # noqa: E402
    TrainConfig,
    write_model_folder,
)
from CTMuscleBoneLib.segmentation.weights import load_weights, save_weights  # noqa: E402

TINY = {
    "structures": ["femur_left", "gluteus_maximus_left"],
    "network": {"channels": [4, 8], "strides": [2], "dropout_p": 0.3},
    "input": {"spacing_mm": [4.0, 4.0, 4.0]},
    "inference": {"patch_size": [16, 16, 16], "mc_samples": 2, "mc_batch_size": 2},
    "patch_size": [16, 16, 16],
    "model": {"name": "tiny-test-model", "synthetic": True, "license": "Apache-2.0"},
}


@pytest.fixture(autouse=True)
def _user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("CTMUSCLEBONE_MODELS", str(tmp_path / "user_models"))


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict(json.loads(json.dumps(TINY)))
    net = build_network(cfg.network_config())
    write_model_folder(tmp_path / "tiny", cfg, net, [])
    return tmp_path / "tiny"


def _edit_card(folder: Path, edit) -> None:  # noqa: ANN001
    p = folder / "card.json"
    d = json.loads(p.read_text())
    edit(d)
    p.write_text(json.dumps(d))


# -- cards -----------------------------------------------------------------------------
def test_card_round_trip(model_dir):
    card = ModelCard.load(model_dir)
    assert card.labels == {0: "background", 1: "femur_left", 2: "gluteus_maximus_left"}
    assert card.synthetic and "not for clinical" in card.clinical_use_warning
    assert card.architecture.out_channels == 3
    assert card.label_values() == {0: 0, 1: 1, 2: 26}
    again = ModelCard.from_dict(card.to_dict())
    assert again.to_dict() == card.to_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema="other/1"), "schema"),
    (lambda d: d["labels"].update({"3": "femur_right"}), "output channels"),
    (lambda d: d["labels"].pop("2") and d["labels"].update({"5": "gluteus_maximus_left"}),
     "without gaps"),
    (lambda d: d["weights"].update(file="model.pt"), "safetensors"),
    (lambda d: d["weights"].update(file="../x.safetensors"), "plain file name"),
    (lambda d: d.update(name="Bad Name"), "name"),
    (lambda d: d["architecture"].update(channels=[4, 8, 16]), "strides"),
])
def test_card_validation_errors(model_dir, edit, message):
    _edit_card(model_dir, edit)
    with pytest.raises(ModelError, match=message):
        ModelCard.load(model_dir)


def test_unknown_label_refused_at_install(model_dir):
    _edit_card(model_dir, lambda d: d["labels"].update({"2": "spleen"}))
    with pytest.raises(ModelError, match="'spleen'.*anatomy"):
        registry.install_model(model_dir)
    assert main(["models", "install", str(model_dir)]) == 2


# -- weights ---------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    cfg = TrainConfig.from_dict(json.loads(json.dumps(TINY))).network_config()
    a, b = build_network(cfg), build_network(cfg)
    with torch.no_grad():  # make BatchNorm running stats non-trivial
        a.train()
        a(torch.randn(2, 1, 16, 16, 16))
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    a.eval()
    b.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(a(x), b(x))
    # the file is plain safetensors: a zip/pickle header would start with b"PK" / b"\x80"
    head = (tmp_path / "w.safetensors").read_bytes()[:2]
    assert head not in (b"PK", b"\x80\x04", b"\x80\x02")


def test_architecture_mismatch_names_the_tensor(model_dir):
    _edit_card(model_dir, lambda d: d["architecture"].update(channels=[4, 6]))
    with pytest.raises(ModelError, match=r"tensor 'encoders\.1.*shape"):
        registry.verify_model(model_dir)


def test_checksum_mismatch_refused(model_dir):
    w = model_dir / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        registry.verify_model(model_dir)
    with pytest.raises(ModelError, match="SHA-256"):
        registry.load_model(model_dir)
    assert main(["models", "verify", str(model_dir)]) == 2


# -- registry and CLI ------------------------------------------------------------------
def test_models_cli_install_list_verify(model_dir, tmp_path, capsys):
    assert main(["models", "install", str(model_dir)]) == 0
    installed = tmp_path / "user_models" / "tiny-test-model"
    assert (installed / "card.json").is_file() and (installed / "model.safetensors").is_file()
    assert not [p for p in installed.parent.iterdir() if p.name.startswith(".")]
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-test-model" in out and "synthetic" in out
    assert main(["models", "verify", "tiny-test-model"]) == 0
    assert "OK tiny-test-model" in capsys.readouterr().out
    # a second install without --force is refused; with --force it replaces
    assert main(["models", "install", str(model_dir)]) == 2
    assert main(["models", "install", str(model_dir), "--force"]) == 0
    card, net = registry.load_model("tiny-test-model")
    assert card.folder == installed.resolve()
    assert not net.training


def test_unknown_model_name(capsys):
    with pytest.raises(ModelError, match="No model named 'nope'"):
        registry.load_model("nope")


def test_install_rejects_missing_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="does not exist"):
        registry.install_model(model_dir)


def test_bundled_models_found_from_source_tree():
    dirs = registry.bundled_models_dirs()
    repo_models = Path(__file__).resolve().parents[1] / "CTMuscleBone" / "Resources" / "Models"
    if repo_models.is_dir():
        assert repo_models.resolve() in dirs


# -- evaluation ------------------------------------------------------------------------
def _cube(shape, lo, hi) -> np.ndarray:  # noqa: ANN001
    m = np.zeros(shape, dtype=bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_identical_labels_dice_one_assd_zero():
    m = _cube((20, 20, 20), (3, 4, 5), (12, 15, 14))
    assert dice(m, m) == 1.0
    assert average_symmetric_surface_distance(m, m, (1.0, 2.0, 3.0)) == 0.0
    assert dice(np.zeros_like(m), np.zeros_like(m)) is None
    assert average_symmetric_surface_distance(m, np.zeros_like(m), (1, 1, 1)) is None


def test_shifted_cube_analytic_dice_and_assd():
    n, h = 8, 0.7  # cube of n voxels a side, shifted one voxel along axis 0 (h mm)
    spacing = (h, 1.0, 1.5)  # the other spacings >= h, so the shift is the nearest surface
    a = _cube((20, 20, 20), (5, 5, 5), (5 + n, 5 + n, 5 + n))
    b = np.roll(a, 1, axis=0)
    assert dice(a, b) == pytest.approx((n - 1) / n)
    # surface voxels at distance h: the whole trailing face (n^2) and the interior of the
    # leading face ((n - 2)^2); all n^3 - (n - 2)^3 surface voxels count, both directions.
    expected = h * (n**2 + (n - 2) ** 2) / (n**3 - (n - 2) ** 3)
    assert average_symmetric_surface_distance(a, b, spacing) == pytest.approx(expected)


def test_evaluate_label_maps_and_auroc():
    g = Geometry((20, 20, 20), (1.0, 1.0, 1.0))
    ref = np.zeros((20, 20, 20), dtype=np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    ref[12:18, 12:18, 12:18] = 26
    pred = ref.copy()
    pred[12:18, 12:18, 12:15] = 0  # gluteus maximus half missing: Dice 2/3
    rmap = LabelMap(ref, g, {1: "femur_left", 26: "gluteus_maximus_left"})
    pmap = LabelMap(pred, g, {1: "femur_left", 26: "gluteus_maximus_left"})
    scores = evaluate_label_maps(pmap, rmap, case="c1",
                                 uncertainty={"femur_left": 0.01,
                                              "gluteus_maximus_left": 0.2})
    by = {s.structure: s for s in scores}
    assert by["femur_left"].dice == 1.0 and by["femur_left"].assd_mm == 0.0
    assert by["gluteus_maximus_left"].dice == pytest.approx(2 / 3)
    assert failure_detection_auroc(scores) == 1.0
    mk = lambda d, u: StructureScore("c", "x", d, None, 1, 1, u)  # noqa: E731
    assert failure_detection_auroc([mk(0.95, 0.3), mk(0.5, 0.1), mk(0.9, 0.2)]) == 0.0
    assert failure_detection_auroc([mk(0.95, 0.3), mk(0.9, 0.1)]) is None
    with pytest.raises(InputError, match="different voxel grids"):
        evaluate_label_maps(pmap, LabelMap(ref, Geometry((20, 20, 20), (2, 1, 1)), {}))


def test_evaluate_cli(tmp_path, capsys):
    from CTMuscleBoneLib.io_ct import write_label_map

    g = Geometry((16, 16, 16), (2.0, 2.0, 2.0))
    ref = np.zeros((16, 16, 16), dtype=np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    pred = np.roll(ref, 1, axis=0)
    write_label_map(LabelMap(ref, g, {1: "femur_left"}), tmp_path / "ref" / "c1.nii.gz")
    write_label_map(LabelMap(pred, g, {1: "femur_left"}), tmp_path / "pred" / "c1.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "ev")]) == 0
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["scores"][0]["dice"] == pytest.approx(7 / 8)
    n, h = 8, 2.0
    assert doc["scores"][0]["assd_mm"] == pytest.approx(
        h * (n**2 + (n - 2) ** 2) / (n**3 - (n - 2) ** 3))
    assert "femur_left" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "pred")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path)]) == 2
