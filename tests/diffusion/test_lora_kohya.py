"""kohya files as the community's tools write and read them: the key set equals what diffusers' own
conversion produces for the same adapter (`convert_state_dict_to_kohya`, SDXL through diffusers'
SGM block mapping), `.alpha` equals `ss_network_alpha`, the `ss_*` / `modelspec.*` metadata is
filled, and the file loads through diffusers' kohya-to-diffusers path to the same pixels as the
diffusers-format file of the same adapter. Tiny random-weight models (real code paths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from likeness.diffusion.lora import load_into_pipeline, peft_state_dict, read_lora, save_lora
from likeness.diffusion.pipelines import load_pipeline

RANK, ALPHA = 4, 8.0  # alpha/rank = 2: a power of two, so both formats give bit-identical pixels
FAMILIES = {"sdxl": "sdxl", "sd15": "sd15"}


def _adapter(pipe) -> dict[str, dict]:
    """A trained-like LoRA on the UNet and every text encoder, as the trainer adds it."""
    from peft import LoraConfig

    torch.manual_seed(0)
    layers = {}
    modules = {"unet_layers": (pipe.unet, ["to_q", "to_k", "to_v", "to_out.0"]),
               "text_encoder_layers": (pipe.text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"])}
    if getattr(pipe, "text_encoder_2", None) is not None:
        modules["text_encoder_2_layers"] = (pipe.text_encoder_2, ["q_proj", "k_proj", "v_proj", "out_proj"])
    for name, (model, targets) in modules.items():
        model.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=targets))
        for pname, param in model.named_parameters():
            if "lora_B" in pname:
                param.data.normal_(0, 0.3)
        layers[name] = {k: v.clone() for k, v in peft_state_dict(model).items()}
        # diffusers models have delete_adapters, transformers models delete_adapter
        (model.delete_adapters if hasattr(model, "delete_adapters") else model.delete_adapter)("default")
    return layers


def _run(pipe):
    return pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(3)).images


@pytest.fixture(params=sorted(FAMILIES))
def family_pipe(request, tiny_folders):
    return request.param, load_pipeline(tiny_folders[request.param], request.param)


def _save(tmp_path, pipe, family, layers, fmt):
    return save_lora(tmp_path / f"{fmt}.safetensors", **layers, fmt=fmt, alpha=ALPHA, family=family,
                     unet_config=dict(pipe.unet.config), title="conformance")


def _diffusers_kohya_keys(layers: dict) -> set[str]:
    """diffusers' own PEFT -> kohya conversion of the same adapter (its names: diffusers UNet layout,
    `lora_te1_` for the first text encoder and the transformers-4 `text_model.` path)."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    peft = {}
    for name, prefix in (("unet_layers", "unet"), ("text_encoder_layers", "text_encoder"),
                         ("text_encoder_2_layers", "text_encoder_2")):
        for key, value in layers.get(name, {}).items():
            path = key if prefix == "unet" or key.startswith("text_model.") else f"text_model.{key}"
            peft[f"{prefix}.{path}"] = value
    return set(convert_state_dict_to_kohya(peft))


def test_kohya_keys_are_the_names_diffusers_and_sd_scripts_use(family_pipe, tmp_path):
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    family, pipe = family_pipe
    layers = _adapter(pipe)
    with safe_open(str(_save(tmp_path, pipe, family, layers, "kohya")), "pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    expected = _diffusers_kohya_keys(layers)
    if family == "sdxl":
        # sd-scripts' SDXL names use the SGM block layout; diffusers' loader maps them back
        # tiny UNet: 1 layer per block, attention in down block 1 -> input_blocks.(1 + 1*2 + 0).1
        assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in ours
        assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_out_0.alpha" in ours
        assert not any("down_blocks" in k or "mid_block" in k or "up_blocks" in k for k in ours)
        assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for k in ours)
        assert any(k.startswith("lora_te2_text_model_encoder_layers_0_self_attn_q_proj") for k in ours)
        mapped = set(_maybe_map_sgm_blocks_to_diffusers(dict(ours), pipe.unet.config))
        # diffusers renumbers SGM blocks there and renames the block words in _convert_unet_lora_key
        words = (("_input_blocks_", "_down_blocks_"), ("_middle_block_", "_mid_block_"),
                 ("_output_blocks_", "_up_blocks_"))
        for old, new in words:
            mapped = {k.replace(old, new) for k in mapped}
        assert mapped == expected
    else:
        # one text encoder: sd-scripts writes `lora_te_` where diffusers' helper writes `lora_te1_`
        assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in ours)
        assert {k.replace("lora_te_", "lora_te1_", 1) for k in ours} == expected
    alphas = {k: float(v) for k, v in ours.items() if k.endswith(".alpha")}
    assert alphas and set(alphas.values()) == {ALPHA}


def test_metadata_matches_the_tensors(family_pipe, tmp_path):
    family, pipe = family_pipe
    layers = _adapter(pipe)
    kohya = read_lora(_save(tmp_path, pipe, family, layers, "kohya"))
    alpha_tensors = {float(v) for k, v in kohya.state_dict.items() if k.endswith(".alpha")}
    meta = kohya.metadata
    assert alpha_tensors == {float(meta["ss_network_alpha"])} == {ALPHA}
    assert int(meta["ss_network_dim"]) == kohya.rank == RANK
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_train_unet_only"] == "False"
    arch = {"sdxl": "stable-diffusion-xl-v1-base/lora", "sd15": "stable-diffusion-v1/lora"}[family]
    assert meta["modelspec.architecture"] == arch and meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["ss_base_model_version"] == {"sdxl": "sdxl_base_v1-0", "sd15": "sd_v1"}[family]
    assert meta["modelspec.title"] == "conformance" and meta["modelspec.date"]
    # the diffusers file has the scaling folded in: to a reader its alpha is its rank
    diffusers = read_lora(_save(tmp_path, pipe, family, layers, "diffusers"))
    assert diffusers.metadata["ss_network_alpha"] == str(RANK)


@pytest.mark.slow
def test_both_formats_load_through_diffusers_to_the_same_pixels(family_pipe, tmp_path):
    family, pipe = family_pipe
    base = _run(pipe)
    layers = _adapter(pipe)
    kohya_path = _save(tmp_path, pipe, family, layers, "kohya")
    # diffusers' own kohya -> diffusers path (lora_state_dict converts the names and reads .alpha)
    state, alphas = pipe.lora_state_dict(str(kohya_path), **({"unet_config": pipe.unet.config}
                                                               if family == "sdxl" else {}))
    assert alphas and set(alphas.values()) == {ALPHA}
    assert any(k.startswith("text_encoder.") for k in state) and any(k.startswith("unet.") for k in state)
    if family == "sdxl":
        assert any(k.startswith("text_encoder_2.") for k in state)
    pipe.load_lora_weights(str(kohya_path), adapter_name="kohya")
    pipe.set_adapters(["kohya"], [1.0])
    from_kohya = _run(pipe)
    pipe.delete_adapters("kohya")
    assert np.abs(from_kohya - base).max() > 1e-3, "the adapter changes the output"
    load_into_pipeline(pipe, read_lora(_save(tmp_path, pipe, family, layers, "diffusers")), "diffusers")
    pipe.set_adapters(["diffusers"], [1.0])
    assert np.array_equal(_run(pipe), from_kohya)
