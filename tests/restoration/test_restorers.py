"""Face restoration: measured gain on a degraded real photo, fidelity semantics, paste-back, errors,
and the CodeFormer architecture against its checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing
from likeness.restoration.face_restore import FFHQ_512, FaceToRestore, restore_face, template_transform
from likeness.restoration.restorers.base import blend_fidelity
from likeness.restoration.restorers.classical import ClassicalRestorer, noise_sigma
from likeness.restoration.restorers.factory import create_restorer
from tests.restoration import astronaut as A

FACE = FaceToRestore(A.FACE_BOX, {"left_eye": A.LEFT_EYE, "right_eye": A.RIGHT_EYE,
                                  "mouth_center": A.MOUTH_CENTER})


def degraded(image: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    """A controlled degradation: Gaussian blur then additive Gaussian noise (grey levels)."""
    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(image.astype(np.float32), (0, 0), blur) if blur else image.astype(np.float32)
    return np.clip(np.rint(out + rng.normal(0.0, noise, image.shape)), 0, 255).astype(np.uint8)


def scores(clean: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    return (peak_signal_noise_ratio(clean, test),
            structural_similarity(clean, test, channel_axis=2, data_range=255))


def test_noise_estimate_tracks_added_noise():
    face = A.photo()[55:190, 160:290]
    own = noise_sigma(face)  # the scan's own grain and texture, ~4 grey levels
    for sigma in (5, 10, 20):
        assert noise_sigma(degraded(face, 0, sigma)) == pytest.approx(np.hypot(own, sigma), rel=0.1)


# Measured (seed 0): +3.7 dB / +0.116 SSIM, +3.2 dB / +0.168, +1.2 dB / +0.048.
@pytest.mark.parametrize("blur, noise, min_db, min_ssim", [
    (0.0, 10.0, 3.0, 0.10),  # noise only
    (1.0, 12.0, 2.5, 0.13),  # blur and noise
    (1.5, 4.0, 0.8, 0.03),  # mostly blur
])
def test_classical_restore_improves_psnr_and_ssim_of_the_face(blur, noise, min_db, min_ssim):
    clean = A.photo()
    bad = degraded(clean, blur, noise)
    out = restore_face(bad, FACE, ClassicalRestorer(), fidelity=0.0)
    region = (slice(70, 180), slice(170, 280))  # inside the face ellipse
    psnr_bad, ssim_bad = scores(clean[region], bad[region])
    psnr_out, ssim_out = scores(clean[region], out[region])
    assert psnr_out - psnr_bad >= min_db, (psnr_bad, psnr_out)
    assert ssim_out - ssim_bad >= min_ssim, (ssim_bad, ssim_out)


def test_fidelity_one_returns_the_input_unchanged():
    bad = degraded(A.photo(), 1.0, 10.0)
    assert np.array_equal(restore_face(bad, FACE, ClassicalRestorer(), fidelity=1.0), bad)
    assert np.array_equal(ClassicalRestorer().restore(bad[:64, :64], 1.0), bad[:64, :64])


def test_fidelity_blends_between_input_and_full_restoration():
    bad = degraded(A.photo(), 1.0, 10.0)
    face = bad[55:190, 160:290]
    full, half = ClassicalRestorer().restore(face, 0.0), ClassicalRestorer().restore(face, 0.5)
    expected = np.rint(0.5 * face.astype(np.float32) + 0.5 * full.astype(np.float32))
    assert np.abs(half.astype(np.float32) - expected).max() <= 1


def test_restoration_stays_inside_the_face_region():
    bad = degraded(A.photo(), 1.0, 10.0)
    out = restore_face(bad, FACE, ClassicalRestorer(), fidelity=0.0)
    x0, y0, x1, y1 = A.FACE_BOX
    margin = 3 * 0.04 * min(x1 - x0, y1 - y0) + 1  # the feather support around the face ellipse
    outside = np.ones(bad.shape[:2], bool)
    outside[int(y0 - margin):int(y1 + margin) + 1, int(x0 - margin):int(x1 + margin) + 1] = False
    assert np.array_equal(out[outside], bad[outside])
    assert not np.array_equal(out, bad)


class Brighten:
    """A stand-in network restorer (512x512 input) that adds 40 grey levels: shows where the
    aligned 512 crop lands back in the image."""

    name, input_size = "brighten", 512
    keeps_input_at_full_fidelity = True

    def load(self):
        pass

    def restore(self, face, fidelity):
        assert face.shape == (512, 512, 3)
        return blend_fidelity(face, np.clip(face.astype(np.int16) + 40, 0, 255).astype(np.uint8), fidelity)


def test_fidelity_one_still_runs_a_restorer_that_restores_there():
    """CodeFormer restores at w = 1 (upstream semantics): restore_face must not skip it."""
    calls = []

    class CodebookLike(Brighten):
        keeps_input_at_full_fidelity = False

        def restore(self, face, fidelity):
            calls.append(fidelity)
            return np.clip(face.astype(np.int16) + 40, 0, 255).astype(np.uint8)

    photo = A.photo()
    out = restore_face(photo, FACE, CodebookLike(), fidelity=1.0)
    assert calls == [1.0] and not np.array_equal(out, photo)


def test_landmarks_align_the_face_onto_the_ffhq_template():
    matrix = template_transform(FACE, A.FACE_BOX, 512)
    for kind in ("left_eye", "right_eye", "mouth_center"):
        x, y = matrix @ np.array([*FACE.landmarks[kind], 1.0])
        assert (x, y) == pytest.approx(FFHQ_512[kind], abs=12)
    # the subject's left eye lands on the template's image-right eye
    assert (matrix @ np.array([*A.LEFT_EYE, 1.0]))[0] > 256


@pytest.mark.parametrize("landmarks", [FACE.landmarks, {}])
def test_network_path_warps_to_512_and_pastes_back_inside_the_face(landmarks):
    photo = A.photo()
    out = restore_face(photo, FaceToRestore(A.FACE_BOX, landmarks), Brighten(), fidelity=0.25)
    brightened = np.clip(photo.astype(float) + 40, 0, 255)  # the teeth clip at 255
    for point in (A.LEFT_EYE, A.MOUTH_CENTER, A.NOSE_TIP):  # inside the face: 0.75 x brightened, 0.25 x input
        window = np.s_[round(point[1]) - 2:round(point[1]) + 3, round(point[0]) - 2:round(point[0]) + 3]
        expected = (0.75 * brightened[window] + 0.25 * photo[window]).mean()
        assert out[window].mean() == pytest.approx(expected, abs=3)  # up to resampling to 512 and back
    assert np.array_equal(out[:30], photo[:30]) and np.array_equal(out[260:], photo[260:])


@pytest.mark.parametrize("face, fidelity, field", [
    (FACE, 1.5, "fidelity"), (FACE, -0.1, "fidelity"), (FACE, float("nan"), "fidelity"),
    (FaceToRestore(None, {}), 0.5, "items[0].face_box"),  # nothing detected: a non-face image
    (FaceToRestore((600, 600, 700, 700), {}), 0.5, "items[0].face_box"),
    (FaceToRestore((10, 10, 20, 20), {}), 0.5, "items[0].face_box"),  # under 16 px
    (FaceToRestore(A.FACE_BOX, {"left_eye": (400, 400)}), 0.5, "items[0].landmarks[LEFT_EYE]"),
])
def test_bad_restore_input_is_rejected(face, fidelity, field):
    with pytest.raises(InvalidArgument) as err:
        restore_face(A.photo(), face, ClassicalRestorer(), fidelity)
    assert err.value.field == field


def test_missing_codeformer_weights_name_the_file(tmp_path: Path):
    restorer = create_restorer("codeformer", lambda name: tmp_path / name)
    with pytest.raises(ModelMissing) as err:
        restorer.load()
    assert str(tmp_path / "codeformer" / "codeformer.pth") in str(err.value)
    assert err.value.code == "FAILED_PRECONDITION"


def test_model_repository_without_codeformer_names_what_is_missing(tmp_path: Path):
    from likeness.core.modelrepo import ModelRepository

    repo = ModelRepository(tmp_path / "models", tmp_path / "cache")
    with pytest.raises(ModelMissing) as err:
        create_restorer("codeformer", repo.fetch)
    assert "codeformer" in str(err.value) and "codeformer.pth" in str(err.value)


def test_missing_or_broken_gfpgan_weights_fail_with_failed_precondition(tmp_path: Path):
    folder = tmp_path / "gfpgan"
    folder.mkdir()
    with pytest.raises(ModelMissing, match=str(folder / "GFPGANv1.4.pth")):
        create_restorer("gfpgan", lambda name: folder).load()
    (folder / "GFPGANv1.4.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FailedPrecondition, match="is not a GFPGAN"):
        create_restorer("gfpgan", lambda name: folder).load()


def test_unknown_restorer_is_invalid():
    with pytest.raises(InvalidArgument, match="one of classical, codeformer, gfpgan"):
        create_restorer("esrgan", lambda name: None)


def check_release_checkpoint_round_trip(net, folder: Path, weights_file: str, restorer, keys: list[str]):
    """Saves `net` in the release layout (`params_ema`), loads it strictly through `restorer`,
    runs a 512x512 face, then shows a checkpoint of another network is refused."""
    import torch

    state = net.state_dict()
    for key in keys:
        assert key in state, key
    folder.mkdir()
    torch.save({"params_ema": state}, folder / weights_file)
    restorer.load()
    for key in keys:
        assert torch.equal(restorer.net.state_dict()[key], state[key])
    face = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = restorer.restore(face, 0.5)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8 and not np.array_equal(out, face)
    torch.save({"params_ema": {keys[0]: state[keys[0]]}}, folder / weights_file)
    restorer.net = None
    with pytest.raises(FailedPrecondition, match="checkpoint"):
        restorer.load()


@pytest.mark.slow
def test_codeformer_loads_an_official_layout_checkpoint_and_runs_512(tmp_path: Path):
    import torch

    from likeness.restoration.restorers.codeformer import CodeFormerRestorer
    from likeness.restoration.restorers.codeformer_arch import CodeFormer

    torch.manual_seed(0)
    net = CodeFormer()
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(94.1e6, rel=0.01)  # the published size
    check_release_checkpoint_round_trip(
        net, tmp_path / "codeformer", "codeformer.pth", CodeFormerRestorer(tmp_path / "codeformer"),
        ["position_emb", "quantize.embedding.weight", "ft_layers.8.self_attn.in_proj_weight",
         "idx_pred_layer.1.weight", "fuse_convs_dict.256.scale.2.bias", "encoder.blocks.24.weight",
         "generator.blocks.24.weight", "encoder.blocks.17.q.weight", "generator.blocks.21.conv1.weight"])


@pytest.mark.slow
def test_gfpgan_loads_an_official_layout_checkpoint_and_runs_512(tmp_path: Path):
    import torch

    from likeness.restoration.restorers.gfpgan import GFPGANRestorer
    from likeness.restoration.restorers.gfpgan_arch import GFPGANv1Clean

    torch.manual_seed(0)
    net = GFPGANv1Clean()
    # GFPGANv1.4.pth holds 348 MB of float32: ~87 M values (86.4 M parameters + noise buffers)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(86.4e6, rel=0.01)
    check_release_checkpoint_round_trip(
        net, tmp_path / "gfpgan", "GFPGANv1.4.pth", GFPGANRestorer(tmp_path / "gfpgan"),
        ["conv_body_first.weight", "conv_body_down.6.skip.weight", "final_linear.weight", "toRGB.6.bias",
         "condition_scale.6.2.weight", "stylegan_decoder.style_mlp.15.weight",
         "stylegan_decoder.constant_input.weight", "stylegan_decoder.style_convs.13.modulated_conv.weight",
         "stylegan_decoder.to_rgbs.6.modulated_conv.modulation.bias", "stylegan_decoder.noises.noise14"])
