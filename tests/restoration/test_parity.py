"""Our CodeFormer and GFPGAN networks against the upstream architecture code: the same random
weights (the reference's state_dict loaded into ours with strict=True) must give the same forward
pass to 1e-4, with the settings of the official inference scripts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.restoration.reference_archs import codeformer_class, gfpgan_clean_class  # noqa: E402

TOL = 1e-4


def _randomise(net) -> None:
    """Move every parameter and buffer off its initial value (the reference zero-inits the position
    embedding, the noise strengths and several biases), so no term of the forward pass hides."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.02)


def _face(seed: int = 0, size: int = 512):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=gen) * 2 - 1


@pytest.fixture(scope="module")
def codeformer_outputs():
    """Reference and ours at w = 1 (every fusion on, AdaIN on) and ours at w = 0: a 512x512 forward
    is the only size the reference accepts (its 16x16 code grid is fixed), so each runs once."""
    from likeness.restoration.restorers.codeformer_arch import CodeFormer

    torch.manual_seed(0)
    # The official inference script's construction (inference_codeformer.py).
    reference = codeformer_class()(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9,
                                   connect_list=["32", "64", "128", "256"]).eval()
    _randomise(reference)
    ours = CodeFormer().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = _face()
    with torch.inference_mode():
        expected = reference(x, w=1.0, adain=True)[0]  # as inference_codeformer.py calls it
        return {"input": x, "reference": expected, "ours": ours(x, w=1.0), "ours_w0": ours(x, w=0.0)}


@pytest.mark.slow
def test_codeformer_matches_the_official_forward_with_adain(codeformer_outputs):
    expected, got = codeformer_outputs["reference"], codeformer_outputs["ours"]
    assert expected.abs().max() > 0.1  # a real signal, not a vanished one
    assert (got - expected).abs().max().item() <= TOL


def test_adain_matches_the_official_function():
    import importlib

    from likeness.restoration.restorers.codeformer_arch import adaptive_instance_norm

    codeformer_class()
    reference = importlib.import_module("basicsr.archs.codeformer_arch").adaptive_instance_normalization
    gen = torch.Generator().manual_seed(2)
    content, style = torch.randn(2, 256, 16, 16, generator=gen), 3 * torch.randn(2, 256, 16, 16, generator=gen) + 1
    expected = reference(content, style)
    assert (adaptive_instance_norm(content, style) - expected).abs().max().item() <= TOL
    assert (expected - content).abs().max() > 1.0  # the statistics really move


@pytest.mark.slow
def test_codeformer_fidelity_one_still_restores(codeformer_outputs):
    """w = 1 fuses the input's features at full weight but still decodes through the codebook, as the
    reference does: the output is neither the input nor the w = 0 output."""
    x, at_one = codeformer_outputs["input"], codeformer_outputs["ours"]
    assert (at_one - x).abs().mean() > 0.05
    assert (at_one - codeformer_outputs["ours_w0"]).abs().max() > 1e-3


@pytest.mark.slow
def test_gfpgan_clean_matches_the_official_forward():
    """GFPGANer's v1.3/v1.4 construction (gfpgan/utils.py) at a reduced size and width (128 px,
    channel multiplier 1: the same code paths, a fraction of the compute); the released 512 px,
    multiplier 2 layout is checked key for key and shape for shape."""
    from likeness.restoration.restorers.gfpgan_arch import GFPGANv1Clean

    def pair(size: int, multiplier: int):
        torch.manual_seed(0)
        reference = gfpgan_clean_class()(out_size=size, num_style_feat=512, channel_multiplier=multiplier,
                                         decoder_load_path=None, fix_decoder=False, num_mlp=8,
                                         input_is_latent=True, different_w=True, narrow=1, sft_half=True).eval()
        _randomise(reference)
        ours = GFPGANv1Clean(out_size=size, multiplier=multiplier).eval()
        ours.load_state_dict(reference.state_dict(), strict=True)  # same keys, same shapes
        return reference, ours

    pair(512, 2)
    reference, ours = pair(128, 1)
    x = _face(size=128)
    with torch.inference_mode():
        # The stored noise buffers on both sides (GFPGANer draws fresh noise; ours is deterministic).
        expected = reference(x, return_rgb=False, randomize_noise=False)[0]
        got = ours(x, fixed_noise=True)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= TOL
