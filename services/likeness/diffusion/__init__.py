"""What generation and training share: diffusion pipelines from the model repository
(`pipelines`), the tiny random-weight models for tests (`tiny_sdxl`), the offline CLIP tokenizer
(`tokenizer`), sampler mapping (`samplers`) and LoRA file formats (`lora`).

Heavy imports (torch, diffusers) happen inside functions, so importing this package is cheap.
"""
