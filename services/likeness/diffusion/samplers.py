"""Sampler names -> diffusers schedulers, built from the model's own scheduler config.

A scheduler holds per-run state (timesteps, step index), so every pipeline call gets a fresh one;
building it from the loaded model's config is cheap and never reloads weights.
"""

from __future__ import annotations

# public name -> (diffusers class name, overrides of the model's scheduler config)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    # PLMS: PNDM without its Runge-Kutta warm-up steps, as in Stable Diffusion's "PLMS"
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "dpm_solver_multistep": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    # Latent Consistency Models: a few steps with an LCM-distilled UNet or an LCM-LoRA
    "lcm": ("LCMScheduler", {}),
}
DEFAULT = "default"  # the scheduler the model ships with (Euler for SDXL)


def make_scheduler(name: str, model_scheduler_config):
    """A fresh scheduler `name` (`default` = the model's own class) from the model's config."""
    import diffusers

    if name == DEFAULT:
        cls_name, overrides = model_scheduler_config["_class_name"], {}
    elif name in SAMPLERS:
        cls_name, overrides = SAMPLERS[name]
    else:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join([DEFAULT, *SAMPLERS])}")
    return getattr(diffusers, cls_name).from_config(model_scheduler_config, **overrides)
