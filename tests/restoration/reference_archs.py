"""The upstream CodeFormer and GFPGAN architecture code, imported for parity tests only.

The reference packages (`basicsr`, `gfpgan`, installed `--no-deps` by tools/install_extras.sh) are
old: basicsr imports `torchvision.transforms.functional_tensor`, which torchvision removed (its
`rgb_to_grayscale` lives on in `torchvision.transforms.functional`), and `gfpgan/__init__` re-registers
an arch name that basicsr already registered. So the alias below stands in for the removed module, and
GFPGAN's two architecture files are loaded as a private package without running `gfpgan/__init__`.
basicsr 1.4.2's `codeformer_arch.py` and `vqgan_arch.py` are byte-identical to the copies the
`codeformer` 0.0.11 package vendors from the official repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path


def _alias_removed_torchvision_module() -> None:
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)


def codeformer_class():
    """The official `CodeFormer` network class (basicsr.archs.codeformer_arch)."""
    _alias_removed_torchvision_module()
    return importlib.import_module("basicsr.archs.codeformer_arch").CodeFormer


def gfpgan_clean_class():
    """The official `GFPGANv1Clean` network class (gfpgan/archs/gfpganv1_clean_arch.py)."""
    _alias_removed_torchvision_module()
    importlib.import_module("basicsr.archs.arch_util")  # what stylegan2_clean_arch imports
    name = "_reference_gfpgan_archs"
    if name not in sys.modules:
        spec = importlib.util.find_spec("gfpgan")
        if spec is None or spec.origin is None:
            raise ImportError("gfpgan is not installed: run tools/install_extras.sh")
        package = types.ModuleType(name)
        package.__path__ = [str(Path(spec.origin).parent / "archs")]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.gfpganv1_clean_arch").GFPGANv1Clean
