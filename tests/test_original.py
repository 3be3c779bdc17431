"""Importing the authors' released MNIST CGN weights (cgn.original).

The checkpoints come from the data mirror (``$CGN_DATA_MIRROR``/original_mnist_checkpoints,
default ../shared/data); tests that need them skip when it is missing. Thresholds were
measured on the released weights (batch of 10 per class, seeds 0..3): mask mean 0.12 / 0.17 /
0.17 (colored / double-colored / wildlife), binary share 0.95-0.97, per-image mask mean
0.05-0.30; double-colored texture and background colours match the palette for 10 of 10
classes. A randomly initialised CGN has a binary share of about 0.83, so 0.92 separates them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cgn.checkpoint import load_cgn, read_weights
from cgn.config import paper_config
from cgn.data.double_colored import DoubleColoredMNIST
from cgn.errors import CheckpointError, ConfigError
from cgn.files import sha256_file
from cgn.mechanisms import MASK_MAX, MASK_MIN
from cgn.model import CGN
from cgn.original import KEY_MAP, convert_original_state_dict, import_original, save_imported
from cgn.viz import counterfactual_sheet, save_image
from tests.conftest import mirror

AUTHORS_NAMES = {
    "colored_mnist": "colored_MNIST",
    "double_colored_mnist": "double_colored_MNIST",
    "wildlife_mnist": "wildlife_MNIST",
}
BINARY_SHARE_MIN = 0.92
PER_CLASS = 10


def checkpoint(dataset: str) -> Path:
    path = mirror() / "original_mnist_checkpoints" / f"cgn_{AUTHORS_NAMES[dataset]}.pth"
    if not path.is_file():
        pytest.skip(f"{path} is missing; set CGN_DATA_MIRROR to the data mirror")
    return path


@pytest.fixture(scope="module")
def imported() -> Callable[[str], CGN]:
    """Each released model, imported once per module (lazily)."""
    cache: dict[str, CGN] = {}

    def get(dataset: str) -> CGN:
        if dataset not in cache:
            cache[dataset] = import_original(checkpoint(dataset), dataset)[0]
        return cache[dataset]

    return get


@torch.no_grad()
def generate(model: CGN, seed: int = 0):
    labels = torch.arange(10).repeat_interleave(PER_CLASS)  # (100,)
    return labels, model(labels, generator=torch.Generator().manual_seed(seed))


def mask_stats(mask: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    binary = ((mask < 0.1) | (mask > 0.9)).float().mean().item()
    return mask.mean().item(), binary, mask.mean((1, 2, 3))


def test_key_map_covers_our_state_dict_exactly():
    ours = set(CGN(paper_config("colored_mnist").model).state_dict())
    assert set(KEY_MAP.values()) == ours
    assert len(set(KEY_MAP.values())) == len(KEY_MAP)
    assert KEY_MAP["f_text1.11.running_var"] == "texture.out_norm.running_var"
    assert KEY_MAP["f_shape.9.weight"] == "shape.up2.1.weight"
    assert convert_original_state_dict({"not.a.key": torch.zeros(1)}) == {"not.a.key": torch.zeros(1)}


@pytest.mark.parametrize("dataset", AUTHORS_NAMES)
def test_import_loads(dataset, imported):
    model = imported(dataset)
    assert isinstance(model, CGN) and not model.training
    assert model.config == paper_config(dataset).model


def test_import_accepts_the_authors_spelling():
    model, config = import_original(checkpoint("wildlife_mnist"), "wildlife_MNIST")
    assert config.train.dataset == "wildlife_mnist" and config.model.discriminator == "conv"
    assert not model.training


@pytest.mark.parametrize("dataset", AUTHORS_NAMES)
def test_imported_masks_are_near_binary_digits(dataset, imported):
    _, out = generate(imported(dataset))
    mean, binary, per_image = mask_stats(out.mask)
    assert out.mask.min() >= MASK_MIN and out.mask.max() <= MASK_MAX
    assert 0.05 < mean < 0.5
    assert binary > BINARY_SHARE_MIN
    assert per_image.min() > 0.03 and per_image.max() < 0.5  # every image has a digit, none is filled


def test_binary_threshold_rejects_a_random_model():
    model = CGN(paper_config("double_colored_mnist").model).eval()
    _, out = generate(model)
    assert mask_stats(out.mask)[1] < BINARY_SHARE_MIN


def test_double_colored_colours_match_our_palette(imported):
    _, out = generate(imported("double_colored_mnist"))
    for maps, palette in (
        (out.foreground, DoubleColoredMNIST.foreground_colors),
        (out.background, DoubleColoredMNIST.background_colors),
    ):
        colours = ((maps + 1) / 2).mean((2, 3)).view(10, PER_CLASS, 3).mean(1)  # (10, 3) in [0, 1]
        nearest = torch.cdist(colours, palette.float()).argmin(1)
        assert (nearest == torch.arange(10)).sum() >= 9, nearest.tolist()


def test_colored_background_is_black(imported):
    _, out = generate(imported("colored_mnist"))
    assert ((out.background + 1) / 2).mean() < 0.02


def test_counterfactual_sheet(imported, tmp_path):
    sheet = counterfactual_sheet(imported("wildlife_mnist"), 3, torch.Generator().manual_seed(0))
    save_image(sheet, tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert sheet.width > 10 * 32 and sheet.height > 10 * 32


def test_save_imported_round_trip(imported, tmp_path):
    path = checkpoint("double_colored_mnist")
    out_path = save_imported(path, "double_colored_MNIST", tmp_path / "cgn.safetensors")
    loaded, config, metadata = load_cgn(out_path)
    original = imported("double_colored_mnist")
    assert config.train.dataset == "double_colored_mnist"
    assert metadata["kind"] == "cgn" and metadata["step"] == "0"
    assert metadata["imported_from"] == path.name
    assert metadata["source_sha256"] == sha256_file(path)
    labels = torch.tensor([0, 3, 7, 9])
    noise = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = original(labels, labels.flip(0), labels, noise=noise, generator=torch.Generator().manual_seed(2))
        b = loaded(labels, labels.flip(0), labels, noise=noise, generator=torch.Generator().manual_seed(2))
    for name in ("mask", "foreground", "background", "image"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert set(read_weights(out_path)[0]) == set(KEY_MAP.values())


def _broken(tmp_path: Path, change) -> Path:
    state = torch.load(checkpoint("colored_mnist"), map_location="cpu", weights_only=True)
    change(state)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.pop("f_text2.10.bias"), "missing ['background.out.bias']"),
        (lambda s: s.update({"f_shape.0.weight": torch.zeros(4096, 40)}), "wrong shapes ['shape.fc.weight"),
        (lambda s: s.update({"f_shape.2.weight": torch.zeros(64)}), "unexpected ['f_shape.2.weight']"),
    ],
)
def test_mismatching_state_dict_is_a_one_line_error(tmp_path, change, expected):
    path = _broken(tmp_path, change)
    with pytest.raises(CheckpointError) as info:
        import_original(path, "colored_mnist")
    assert expected in str(info.value) and "\n" not in str(info.value)


class NotATensor:
    """A custom class: unpickling it needs more than weights_only allows."""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"this is not a checkpoint" * 10, "loads with weights_only=True"),
        (b"", "EOFError"),
        ("truncated", "failed reading zip archive"),
        ([torch.zeros(3)], "not a state dict"),
        ({"f_shape.0.weight": NotATensor()}, "Unsupported global"),
    ],
)
def test_unreadable_files_raise_checkpoint_error(tmp_path, content, expected):
    path = tmp_path / "ckp.pth"
    if content == "truncated":
        path.write_bytes(checkpoint("colored_mnist").read_bytes()[:100_000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        import_original(path, "colored_mnist")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_unknown_dataset_and_contradicting_cfg(tmp_path):
    path = checkpoint("wildlife_mnist")
    with pytest.raises(ConfigError, match="no released CGN"):
        import_original(path, "fashion_mnist")
    with pytest.raises(CheckpointError, match="trained on wildlife_MNIST"):
        import_original(path, "colored_mnist")
    # The authors' layout: experiments/cgn_<dataset>/{cfg.yaml, weights/ckp.pth}.
    (tmp_path / "weights").mkdir()
    shutil.copy(path, tmp_path / "weights" / "ckp.pth")
    shutil.copy(path.with_suffix(".cfg.yaml"), tmp_path / "cfg.yaml")
    with pytest.raises(CheckpointError, match="trained on wildlife_MNIST"):
        import_original(tmp_path / "weights" / "ckp.pth", "double_colored_mnist")
    assert import_original(tmp_path / "weights" / "ckp.pth", "wildlife_mnist")[1].train.dataset == "wildlife_mnist"
