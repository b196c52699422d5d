"""The committed demo model (CTMuscleBone/Resources/Models/ctmusclebone-demo-synthetic) on a fresh
phantom it has never seen, and the ``segment`` command's outputs and banner.
(About 1-2 minutes on 2 cores: the model has dropout in every block, so each of the
Monte-Carlo samples is a whole network pass.)

The project's target is a mean Dice >= 0.9 for every structure on held-out phantoms.
The committed model (30 classes, version 2.1.1: the weights of 2.1.0 with sub-voxel
shifted samples; docs/segmentation.md) reaches it for 30 of the 33 structures scored
over the 8 held-out phantoms of its card (6 patient-like bodies, 2 with the layout's
standard body; the vertebrae numbered L1-L5 and a sixth lumbar); :data:`CARD_SHORTFALL`
lists the others with the floor each must keep (measured means 0.886-0.898, 0.867-0.894
without the shifted samples: the thin gracilis and the right gluteus minimus, lowest on
the standard bodies). One fresh patient-like phantom is held to
0.85 per structure (0.75 for the gracilis and gluteus minimus, whose held-out minima are
0.83 and 0.82-0.83; 0.73-0.77 and 0.62-0.72 with version 2.0.0) and 0.9 on average.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from CTMuscleBoneLib.segmentation.model_card import ModelCard  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parents[1] / "CTMuscleBone" / "Resources" / "Models" / \
    "ctmusclebone-demo-synthetic"

#: Lowest per-structure mean Dice over the card's held-out phantoms (the target).
CARD_MEAN_DICE_MIN = 0.9
#: Structures whose held-out mean misses the target, with the floor they must keep
#: (measured: gluteus minimus right 0.895, gracilis 0.898 / 0.886; version 2.1.0 without
#: shifted samples: 0.894, 0.883 / 0.867).
CARD_SHORTFALL = {"gluteus_minimus_right": 0.88, "gracilis_left": 0.88,
                  "gracilis_right": 0.87}
#: Lowest per-structure Dice on one fresh patient-like phantom, by structure.
FRESH_DICE_MIN_DEFAULT = 0.85
FRESH_DICE_MIN = {"gracilis_left": 0.75, "gracilis_right": 0.75,
                  "gluteus_minimus_left": 0.75, "gluteus_minimus_right": 0.75}



def test_demo_model_is_committed():
    assert (MODEL_DIR / "card.json").is_file(), \
        "the demo model must be in CTMuscleBone/Resources/Models"


@pytest.fixture(scope="module")
def fresh_phantom():
    from CTMuscleBoneLib.phantoms import make_phantom
    from CTMuscleBoneLib.segmentation.training.synthetic import (
        PATIENT_LIKE_HELD_OUT_SEEDS,
        patient_like_spec,
    )

    # a held-out seed the card's validation did not use either (permuted storage,
    # venous-like contrast, atrophy 0.76); the z range holds the hip and the lower lumbar
    # region (whole femoral heads, hip bones, glutei, iliopsoas, sacrum)
    spec = patient_like_spec(PATIENT_LIKE_HELD_OUT_SEEDS.start + 503, region=(-110.0, 130.0),
                             spacing_range_mm=(2.8, 3.4))
    return make_phantom(spec)


def test_card_is_synthetic_and_reports_held_out_dice():
    card = ModelCard.load(MODEL_DIR)
    assert card.synthetic and "not for clinical" in card.clinical_use_warning
    assert card.weights.format == "safetensors"
    assert (MODEL_DIR / card.weights.file).stat().st_size < 10 * 2**20
    held = card.validation["held_out"]["structures"]
    assert set(card.structure_keys) - {"iliacus_left", "iliacus_right"} <= set(held)
    scored = {k: v["dice_mean"] for k, v in held.items() if v["dice_mean"] is not None}
    # every class but the iliacus (the phantoms do not paint it), lumbar levels numbered
    assert len(scored) >= 33
    low = {k: d for k, d in scored.items()
           if d < CARD_SHORTFALL.get(k, CARD_MEAN_DICE_MIN)}
    assert not low, f"held-out mean Dice below the target or the documented floor: {low}"


def _whole_in_view(truth, key: str) -> bool:
    """The structure (every member of a group) is painted and not cut by the view."""
    from CTMuscleBoneLib.anatomy import group_members

    members = [m for m in (group_members(key) or [key]) if m in truth]
    return bool(members) and all(not truth[m].truncated and truth[m].voxel_count > 0
                                 for m in members)


def test_demo_model_dice_on_fresh_phantom(fresh_phantom):
    from CTMuscleBoneLib.segmentation.evaluate import evaluate_label_maps
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.registry import load_model, verify_model
    from CTMuscleBoneLib.segmentation.training.datasets import reference_for

    verify_model(MODEL_DIR)
    card, net = load_model(MODEL_DIR)
    torch.set_num_threads(2)
    inf = card.inference.__class__.from_dict({**card.inference.to_dict(), "mc_samples": 4,
                                              "mc_batch_size": 4})
    res = predict(fresh_phantom.ct, net, card.input, inf, card.labels, device="cpu")
    truth = fresh_phantom.truth.structures
    ref, keys = reference_for(fresh_phantom.labels, card.structure_keys)
    whole = [k for k in keys if _whole_in_view(truth, k)]
    # hip bones, sacrum, glutei, iliopsoas are whole inside this field of view (the
    # femoral shafts and the thigh muscles leave it)
    assert {"hip_left", "hip_right", "sacrum", "gluteus_medius_left",
            "gluteus_maximus_right", "iliopsoas_left"} <= set(whole)
    scores = evaluate_label_maps(res.label_map, ref, whole, with_surface=False)
    low = {s.structure: round(s.dice, 3) for s in scores
           if s.dice < FRESH_DICE_MIN.get(s.structure, FRESH_DICE_MIN_DEFAULT)}
    assert not low, f"Dice below the minimum: {low}"
    assert np.mean([s.dice for s in scores]) >= 0.9
    assert set(res.uncertainty) == {"predictive_variance", "predictive_entropy",
                                    "mutual_information"}


def test_segment_cli_writes_outputs_and_banner(fresh_phantom, tmp_path, capsys):
    from CTMuscleBoneLib.cli.main import main
    from CTMuscleBoneLib.image import CTImage
    from CTMuscleBoneLib.io_ct import write_image

    # a small crop keeps the CLI run short
    ct = fresh_phantom.ct
    crop = CTImage(np.ascontiguousarray(ct.hu[::2, ::2, ::2]),
                   ct.geometry.__class__(
                       tuple(int(np.ceil(s / 2)) for s in ct.geometry.shape),
                       tuple(2 * s for s in ct.geometry.spacing_mm), ct.geometry.origin_mm,
                       ct.geometry.direction))
    write_image(crop.hu, crop.geometry, tmp_path / "ct.nii.gz")
    rc = main(["segment", "--ct", str(tmp_path / "ct.nii.gz"), "--model", str(MODEL_DIR),
               "--samples", "2", "--seed", "3", "--out", str(tmp_path / "seg"), "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    # the banner once (issue: not repeated on every stream)
    assert (captured.out + captured.err).count("not for clinical images") == 1
    seg = tmp_path / "seg"
    for name in ("labels.nii.gz", "labels.labels.json", "review.csv", "review.json",
                 "uncertainty_predictive_variance.nii.gz",
                 "uncertainty_predictive_entropy.nii.gz",
                 "uncertainty_mutual_information.nii.gz"):
        assert (seg / name).is_file(), name
    review = json.loads((seg / "review.json").read_text())
    assert review["mc_samples"] == 2 and review["seed"] == 3 and review["model"]["synthetic"]
    # one review row per class, the lumbar class replaced by its numbered vertebrae
    from CTMuscleBoneLib.io_labels import read_labels

    written = read_labels(seg / "labels.nii.gz", crop.geometry)
    counts = np.bincount(written.array.ravel())
    present = {k for v, k in written.structures.items() if v < counts.size and counts[v]}
    levels = {k for k in present if k.startswith("vertebrae_L")}
    assert levels, "the crop holds lumbar vertebrae above the sacrum: they are numbered"
    assert {r["key"] for r in review["structures"]} == (
        set(ModelCard.load(MODEL_DIR).structure_keys) - {"vertebrae_lumbar"}) | levels | (
        present & {"vertebrae_lumbar"})
    voxel_cm3 = float(np.prod(crop.geometry.spacing_mm)) / 1000.0
    for r in review["structures"]:  # each volume is that of the written label map
        value = written.value_of(r["key"])
        n = int(counts[value]) if value is not None and value < counts.size else 0
        assert r["volume_cm3"] == pytest.approx(n * voxel_cm3, rel=1e-6, abs=1e-6), r["key"]
    assert not [p for p in seg.iterdir() if p.name.startswith(".")]  # no temp files left
    # the evaluate command reads the segment folder (labels + review.json)
    from CTMuscleBoneLib.io_ct import write_label_map

    ref = fresh_phantom.labels
    ref_small = ref.__class__(np.ascontiguousarray(ref.array[::2, ::2, ::2]), crop.geometry,
                              ref.structures)
    write_label_map(ref_small, tmp_path / "ref" / "seg.nii.gz")
    assert main(["evaluate", "--pred", str(seg), "--ref",
                 str(tmp_path / "ref" / "seg.nii.gz"), "--no-surface"]) == 0
    assert "femur_left" in capsys.readouterr().out
