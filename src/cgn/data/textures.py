"""The 20 texture photos of Wildlife MNIST (from the Describable Textures Dataset).

``object/`` holds 10 "striped" textures for the digit and ``background/`` 10 "veined" ones;
the first character of a file name is its class. The files come from a local folder
(``--textures DIR`` or ``$CGN_DATA_MIRROR/wildlife_textures``) or, for users with a network,
from the authors' repository; either way each file is checked against the pinned SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from cgn.data.paths import data_root, mirror_root
from cgn.errors import DataUnavailableError
from cgn.files import atomic_dir, sha256_file

log = logging.getLogger(__name__)

FOLDER = "wildlife_textures"
UPSTREAM = (
    "https://raw.githubusercontent.com/autonomousvision/counterfactual_generative_networks/main/mnists/data/textures/"
)
TEXTURE_SHA256 = {
    "background/0_veined_0066.jpg": "253effebdb863d8fe4254fd9c3df21e36c9222fad2f454639ad8d1e8b87ed96a",
    "background/1_veined_0067.jpg": "67e555623f1fff4a9abda6036e6c76ce6cbcb801ff240e04d8848b475709a4dd",
    "background/2_veined_0073.jpg": "91b3dc279226199de4dc03b56da0ce892e9d3f10b4b5136037f28de906d2276d",
    "background/3_veined_0180.jpg": "9dbe19a8284cd2b6c1bef09928acdbd9ccdf9ded707ddb6358221968165ce458",
    "background/4_veined_0131.jpg": "9e6d2ae36b8755d2a530005b905c2a3f4e1bc94b1535b6fe6e1c553acfc2b54b",
    "background/5_veined_0157.jpg": "7e34b2b445f50c7af9c86262be9af39c3ce43c61d039d8c44a4afba89d077ae1",
    "background/6_veined_0158.jpg": "4f992fd0da74cc53d37c065699a73af9e42c06dc38b2a2f22673452458708ce6",
    "background/7_veined_0104.jpg": "c43441149846718186ab4c01f61c476c96c748c1149defaf5366e2534431954c",
    "background/8_veined_0188.jpg": "d32d40f567ee3f58d421b9e02265ce1c8f0fe1ed91d8dedaa282cdc114161f39",
    "background/9_veined_0189.jpg": "ab3144757372f34153b29ddf1e2e80cbdf6079bb18233b220ad5dda594829d74",
    "object/0_striped_0001.jpg": "41b22c1a1e5edba336302b2ec175fc280647aaae6ebbbbfa9cfc433596305aff",
    "object/1_striped_0091.jpg": "d6020007460a7e41a5d654e1c3b2b2ef8243e44aeede630aaa2947c0aedfddb9",
    "object/2_striped_0008.jpg": "2ab2fc76e9ffd495ddf690a3d0bdf75158fcc2c73fb24c420ca238ce36a87ca0",
    "object/3_striped_0043.jpg": "b9ab6ae10ddb6381a8021305fd41cdf2e575d9a829e2b79b9db218d89ac66537",
    "object/4_striped_0092.jpg": "90e4b7683d348fb6d940abca13be4ad619b379ad9b3e2c96fab9f7d4dc4214ad",
    "object/5_striped_0028.jpg": "b32940be4462eb40879905f13dfa2753d1e4b044904ed6390da6a8d35735d6d2",
    "object/6_striped_0097.jpg": "bd362eefa810a35a24eeffe542a9727c3953ded745fa68e167b68a718b71d731",
    "object/7_striped_0004.jpg": "0943891ac43a4acd5d8a874f121ef862a97a1de000c3fb1d936bbe2c6d027c2a",
    "object/8_striped_0125.jpg": "edfe305c0e8f9dfa9d1576c9a32ab3f29e74ea1e8b5bab91ab4b9b83aec902e2",
    "object/9_striped_0033.jpg": "d22a5fcf1ce2ea648c506d13f31a50eaf2260b903256e40fec32995b531d6933",
}
KINDS = ("object", "background")
HOW_TO_PROVIDE = (
    "provide them with `cgn data prepare --textures DIR` (a folder with object/ and background/ "
    "from the authors' repository, mnists/data/textures) or set $CGN_DATA_MIRROR to a folder "
    "that has wildlife_textures/"
)


def texture_dir(root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / FOLDER


def prepare_textures(
    root: str | os.PathLike | None = None,
    *,
    source: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Make sure the verified textures are in the data directory; return their folder.

    Sources, in order: ``source``, ``$CGN_DATA_MIRROR/wildlife_textures``, a download.
    """
    target = texture_dir(root)
    if _complete(target):
        return target
    sources = [Path(source)] if source is not None else []
    if mirror_root() is not None:
        sources.append(mirror_root() / FOLDER)
    errors: list[str] = []
    with atomic_dir(target) as tmp:
        for folder in sources:
            try:
                _copy_verified(folder, tmp)
                break
            except DataUnavailableError as e:
                errors.append(str(e))
        else:
            if not download:
                tried = "; ".join(errors) or "no local source"
                raise DataUnavailableError(f"the Wildlife textures are missing ({tried}); {HOW_TO_PROVIDE}")
            _download_verified(tmp, errors)
    log.info("Wildlife textures in %s", target)
    return target


def load_textures(root: str | os.PathLike | None = None) -> dict[str, list[np.ndarray]]:
    """``{"object": [10 × (H, W, 3) uint8], "background": [...]}``, list index = class."""
    folder = texture_dir(root)
    if not _complete(folder):
        raise DataUnavailableError(f"the Wildlife textures are not prepared in {folder}: run `cgn data prepare`")
    out: dict[str, list[np.ndarray]] = {}
    for kind in KINDS:
        names = sorted((n for n in TEXTURE_SHA256 if n.startswith(kind + "/")), key=_class_of)
        out[kind] = [np.asarray(Image.open(folder / n).convert("RGB")) for n in names]
    return out


def _class_of(name: str) -> int:
    return int(Path(name).name.split("_", 1)[0])


def _complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in TEXTURE_SHA256)


def _copy_verified(source: Path, dest: Path) -> None:
    for name, expected in TEXTURE_SHA256.items():
        src = source / name
        if not src.is_file():
            raise DataUnavailableError(f"{src} does not exist")
        if sha256_file(src) != expected:
            raise DataUnavailableError(f"{src} fails its SHA-256 check")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / name)


def _download_verified(dest: Path, errors: list[str]) -> None:
    for name, expected in TEXTURE_SHA256.items():
        url = UPSTREAM + name
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                blob = response.read()
        except (urllib.error.URLError, OSError) as e:
            tried = "".join(f"; {err}" for err in errors)
            raise DataUnavailableError(
                f"could not download the Wildlife textures ({getattr(e, 'reason', e)}{tried}); {HOW_TO_PROVIDE}"
            ) from None
        if hashlib.sha256(blob).hexdigest() != expected:
            raise DataUnavailableError(f"{url} fails its SHA-256 check; {HOW_TO_PROVIDE}")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(blob)
