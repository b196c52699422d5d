"""Largest-component clean-up only where a structure is one piece.

A group class (the thigh compartments, quadriceps: separate muscles) and the hip bone
(pieces in a cut field of view; four disjoint parts in the phantom) must keep every
piece the network labels; a one-piece structure (a femur) keeps its largest only. Found
when a model of the thigh groups lost two thirds of each group to the clean-up.
"""

from __future__ import annotations

import numpy as np
import pytest
from CTMuscleBoneLib import anatomy
from CTMuscleBoneLib.phantoms import make_phantom


@pytest.mark.parametrize(("key", "one_piece"), [
    ("femur_left", True), ("gluteus_maximus_right", True), ("sacrum", True),
    ("vertebrae_L3", True), ("quadriceps_femoris_left", False),
    ("thigh_medial_compartment_right", False), ("thigh_posterior_compartment_left", False),
    ("vertebrae_lumbar", False), ("hip_left", False), ("hip_right", False)])
def test_which_structures_are_one_piece(key, one_piece):
    assert key in anatomy.BY_KEY
    assert anatomy.is_one_piece(key) is one_piece


def test_predict_keeps_every_piece_of_a_group_and_the_largest_of_a_bone(one_torch_thread):
    """A tiny untrained network whose channel 1 wins on 5 % of the voxels (many pieces):
    named as a group or the hip bone, predict's labels equal the raw labels (no
    clean-up); named as a femur, only the largest piece stays."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    import torch
    from CTMuscleBoneLib.segmentation.config import InferenceConfig, InputConfig, NetworkConfig
    from CTMuscleBoneLib.segmentation.inference import predict
    from CTMuscleBoneLib.segmentation.network import build_network
    from scipy import ndimage

    ct = make_phantom(region="thigh", spacing_mm=6.0).ct
    inp = InputConfig(spacing_mm=(6.0, 6.0, 6.0))
    torch.manual_seed(2)
    net = build_network(NetworkConfig(out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                                      dropout_p=0.0))
    cfg = InferenceConfig(patch_size=(16, 16, 16), mc_samples=1)
    probe = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=1,
                                                  return_probabilities=True),
                    {0: "background", 1: "femur_left"}, device="cpu")
    p = probe.probabilities
    with torch.no_grad():
        net.head.conv.bias[1] -= float(np.percentile(np.log(p[1] + 1e-12)
                                                     - np.log(p[0] + 1e-12), 95))
    raw = predict(ct, net, inp, InferenceConfig(patch_size=(16, 16, 16), mc_samples=1,
                                                largest_component=False),
                  {0: "background", 1: "femur_left"}, device="cpu").label_map.array
    pieces, n = ndimage.label(raw != 0, structure=np.ones((3, 3, 3)))
    assert n > 3
    for key in ("quadriceps_femoris_left", "thigh_posterior_compartment_right", "hip_left"):
        got = predict(ct, net, inp, cfg, {0: "background", 1: key}, device="cpu")
        np.testing.assert_array_equal(got.label_map.array != 0, raw != 0)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    only_largest = predict(ct, net, inp, InferenceConfig(
        patch_size=(16, 16, 16), mc_samples=1, component_min_fraction=1.0),
        {0: "background", 1: "femur_left"}, device="cpu").label_map.array
    np.testing.assert_array_equal(only_largest != 0, pieces == int(np.argmax(sizes)))
    # the default keeps every piece of >= 10 % of the largest (a 2-D model's split muscle)
    femur = predict(ct, net, inp, cfg, {0: "background", 1: "femur_left"},
                    device="cpu").label_map.array
    big = np.flatnonzero(sizes >= 0.1 * sizes.max())
    np.testing.assert_array_equal(femur != 0, np.isin(pieces, big) & (pieces != 0))
    assert 1 <= len(big) < n  # some pieces kept beside the largest or some removed
