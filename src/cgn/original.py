"""Import the authors' released MNIST CGN weights into our :class:`~cgn.model.CGN` (PAPER.md §1.2).

Where the weights come from: the authors' repository autonomousvision/counterfactual_generative_networks
(MIT licence) ships one generator per dataset as ``mnists/experiments/cgn_<dataset>/weights/ckp.pth``
(``<dataset>`` = colored_MNIST, double_colored_MNIST, wildlife_MNIST), with the training config as
``cfg.yaml`` beside it. Each ``.pth`` is a pickled PyTorch state dict of the generator only (no
discriminator, no optimiser). Our data mirror keeps them as ``original_mnist_checkpoints/cgn_<dataset>.pth``.

The architecture is the same as ours, so importing is a renaming of keys: the original keeps
each mechanism as one ``nn.Sequential`` whose parameter-free layers (reshape, instance norm,
upsample, LeakyReLU, tanh) still take up indices, hence the gaps in its numbering. Both models
concatenate the input as ``[noise u, label embedding]``, so the first Linear layers need no
permutation. The pickle is read with ``torch.load(..., weights_only=True)`` only (never unpickle
arbitrary objects from a downloaded file), and with ``map_location="cpu"``: the tensors were
saved from a GPU.

The double-colored model reproduces our DoubleColoredMNIST palette; the colored one was trained
on the authors' own Colored MNIST colours, which differ from ours (their script was never
published), so its textures do not match ``ColoredMNIST.foreground_colors``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from cgn.checkpoint import load_state, save_weights
from cgn.config import PAPER_SETTINGS, CGNConfig, paper_config
from cgn.errors import CheckpointError, ConfigError
from cgn.files import sha256_file
from cgn.model import CGN

log = logging.getLogger(__name__)

# Parameter and buffer names of each kind of layer that carries state.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "embedding": ("weight",),
    "linear": ("weight", "bias"),
    "conv": ("weight",),  # no bias: followed by BatchNorm
    "conv_bias": ("weight", "bias"),
    "batchnorm": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
}

# Original module name -> (our module name, kind). Indices are positions in the original's
# nn.Sequential; the missing ones are parameter-free layers.
MODULE_MAP: dict[str, tuple[str, str]] = {
    "label_emb": ("label_embedding", "embedding"),
    # shape: Linear, reshape, IN, [Up, Conv, BN, LReLU], IN, [Up, Conv, BN, LReLU], IN
    "f_shape.0": ("shape.fc", "linear"),
    "f_shape.4": ("shape.up1.1", "conv"),
    "f_shape.5": ("shape.up1.2", "batchnorm"),
    "f_shape.9": ("shape.up2.1", "conv"),
    "f_shape.10": ("shape.up2.2", "batchnorm"),
    # texture (f_text1) and background (f_text2): Linear, reshape, [Up, Conv, BN, LReLU] x 2,
    # Conv (with bias), BN, Tanh
    **{
        f"{original}.{index}": (f"{ours}.{name}", kind)
        for original, ours in (("f_text1", "texture"), ("f_text2", "background"))
        for index, name, kind in (
            (0, "fc", "linear"),
            (3, "up1.1", "conv"),
            (4, "up1.2", "batchnorm"),
            (7, "up2.1", "conv"),
            (8, "up2.2", "batchnorm"),
            (10, "out", "conv_bias"),
            (11, "out_norm", "batchnorm"),
        )
    },
}

# Every original key -> our key, e.g. "f_text1.11.running_var" -> "texture.out_norm.running_var".
KEY_MAP: dict[str, str] = {
    f"{original}.{param}": f"{ours}.{param}"
    for original, (ours, kind) in MODULE_MAP.items()
    for param in _PARAMETERS[kind]
}

# The authors' dataset spellings (as in their cfg.yaml) -> ours.
_ALIASES = {
    "colored_MNIST": "colored_mnist",
    "double_colored_MNIST": "double_colored_mnist",
    "wildlife_MNIST": "wildlife_mnist",
}


def dataset_name(dataset: str) -> str:
    """Our name for ``dataset``; accepts the authors' spellings (``colored_MNIST`` etc.)."""
    name = _ALIASES.get(dataset, dataset.lower())
    if name not in PAPER_SETTINGS:
        raise ConfigError(
            f"no released CGN for dataset {dataset!r}; choose one of: {', '.join(PAPER_SETTINGS)} "
            f"(or the authors' {', '.join(_ALIASES)})"
        )
    return name


def declared_dataset(path: str | os.PathLike) -> str | None:
    """The dataset named in the authors' config beside ``path`` (``<name>.cfg.yaml`` as in our
    mirror, or ``../cfg.yaml`` as in their experiments folder), or None if there is none."""
    path = Path(path)
    candidates = [path.with_suffix(".cfg.yaml")]
    if path.parent.name == "weights":
        candidates.append(path.parent.parent / "cfg.yaml")
    for cfg in candidates:
        if cfg.is_file():
            found = re.search(r"^\s*DATASET:\s*['\"]?([\w-]+)", cfg.read_text(errors="replace"), re.MULTILINE)
            return found.group(1) if found else None
    return None


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the original's keys to ours; unknown keys pass through unchanged, so that loading
    reports them as unexpected instead of dropping them silently."""
    return {KEY_MAP.get(key, key): value for key, value in state.items()}


def read_original(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The original state dict at ``path``, read with ``weights_only=True``; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"original checkpoint {path} does not exist; the authors release it as "
            "mnists/experiments/cgn_<dataset>/weights/ckp.pth in autonomousvision/counterfactual_generative_networks"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling raises many types; all mean "unreadable"
        raise CheckpointError(
            f"{path} is not a PyTorch file that loads with weights_only=True ({_reason(e)}); "
            "it may be corrupt, truncated, or hold pickled objects other than tensors"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict of tensors; expected the generator's "
            "state_dict() as released by the authors"
        )
    return dict(state)


def _reason(error: Exception) -> str:
    """The informative sentence of a (long, multi-line) torch.load error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    _, found, detail = text.partition("WeightsUnpickler error:")
    paragraphs = [p for p in re.split(r"\n\s*\n", detail if found else text) if p.strip()] or [""]
    text = " ".join(paragraphs[0].split())
    text = text.split(". ")[0][:160]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def import_original(path: str | os.PathLike, dataset: str) -> tuple[CGN, CGNConfig]:
    """Build ``CGN(paper_config(dataset).model)`` and load the authors' weights into it.

    Returns the model in eval mode (BatchNorm uses the released running statistics) and its
    config. Raises CheckpointError for a missing, unreadable or mismatching file, or when the
    authors' cfg.yaml beside it names another dataset (the three files have identical shapes,
    so only that file can tell them apart).
    """
    name = dataset_name(dataset)
    state = convert_original_state_dict(read_original(path))
    declared = declared_dataset(path)
    if declared is not None and _ALIASES.get(declared, declared.lower()) != name:
        raise CheckpointError(
            f"{path} was trained on {declared} according to its cfg.yaml, not on {dataset}; pass the right dataset"
        )
    config = paper_config(name)
    model = CGN(config.model)
    load_state(model, state, str(path))
    log.info("imported %s as a %s CGN", path, config.train.dataset)
    return model.eval(), config


def save_imported(path_in: str | os.PathLike, dataset: str, out_path: str | os.PathLike) -> Path:
    """Import the original weights at ``path_in`` and write them as our safetensors checkpoint
    (kind "cgn", step 0, with the source file's name and SHA-256), readable by ``load_cgn``."""
    model, config = import_original(path_in, dataset)
    extra = {"imported_from": Path(path_in).name, "source_sha256": sha256_file(path_in)}
    return save_weights(out_path, model, config=config, kind="cgn", step=0, extra=extra)
