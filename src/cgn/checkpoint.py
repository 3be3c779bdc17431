"""Checkpoints: safetensors weights with the resolved config embedded as JSON metadata.

Loading rebuilds the right model from the embedded config (the original rebuilt models with
default sizes). Resume state (optimizers, RNG states, step) is a separate file, read with
``weights_only=True``. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cgn.config import CGNConfig
from cgn.errors import CheckpointError, ConfigError
from cgn.files import atomic_path

FORMAT = "cgn/1"
# A training checkpoint's moving average of the generator (``train.ema_decay``). Its BatchNorm
# statistics are the live model's, not its own: ``load_cgn`` recalibrates them as the trainer
# does for ``cgn.safetensors`` (trainer.WeightAverage).
AVERAGE_KIND = "cgn_average"


def _version() -> str:
    from cgn import __version__

    return __version__


def save_weights(
    path: str | os.PathLike,
    module: nn.Module,
    *,
    config: CGNConfig,
    kind: str,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``module``'s state dict as safetensors with config, kind, step and version."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "kind": kind,
        "step": str(step),
        "config": config.to_json(),
        "cgn_version": _version(),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()},
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a cgn safetensors file; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read for tensors and metadata
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a cgn checkpoint (no '{FORMAT}' metadata); import foreign weights with `cgn import-original`"
        )
    return state, metadata


def config_of(metadata: dict[str, str]) -> CGNConfig:
    try:
        return CGNConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise CheckpointError(f"the checkpoint's embedded config is unusable: {e}") from None


def calibration_generator(config: CGNConfig, step: int) -> torch.Generator:
    """The random stream that recalibrates the weight average's BatchNorm statistics at ``step``."""
    from cgn.seeding import make_generator

    return make_generator(config.train.seed, "calibrate", step)


def load_cgn(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a generator (a CGN, or the cGAN baseline when its config says so) from a
    checkpoint: returns (model in eval mode, config, metadata).

    A training checkpoint's weight average (``checkpoints/step_*/average.safetensors``) comes
    back with its BatchNorm statistics recalibrated, the generator the run would have written
    as ``cgn.safetensors`` had it ended at that step (equal up to float rounding).
    """
    from cgn.model import build_generator, recalibrate_batchnorm

    state, metadata = read_weights(path)
    kind = metadata.get("kind")
    if kind == "cgn" and Path(path).name == "average.safetensors" and Path(path).parent.name.startswith("step_"):
        kind = AVERAGE_KIND  # a checkpoint written before the average had its own kind (2026-12-06)
    if kind not in ("cgn", AVERAGE_KIND):
        raise CheckpointError(f"{path} holds a {kind!r}, not a CGN generator")
    config = config_of(metadata)
    model = build_generator(config.model)
    load_state(model, state, str(path))
    if kind == AVERAGE_KIND:
        model = recalibrate_batchnorm(model, calibration_generator(config, int(metadata["step"])))
    return model.to(device).eval(), config, metadata


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line error naming missing, unexpected or misshapen keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or misshapen:
        parts = [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"wrong shapes {misshapen[:3]}" if misshapen else "",
        ]
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state)
