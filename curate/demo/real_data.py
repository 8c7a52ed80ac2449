"""The installed images the real demo pool is made of, and their versions.

- Fashion-MNIST (Debian `dataset-fashion-mnist`): 28x28 grey product photos, 10 classes;
  the train split feeds the pool and the seed set, t10k the eval set.
- GNOME icons (Debian `gnome-icon-theme`, 256 px): ICONS maps an icon name to the object
  it shows, in words. Held-out eval images of an icon class are Adwaita's own drawing of
  the same name (`adwaita-icon-theme`, 512/256 px folders only: Adwaita's legacy folder
  holds copies of the GNOME drawings, which would not be held out).
- A few photos bundled with scikit-image, when it is installed.
"""
from __future__ import annotations

import gzip
import importlib.util
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from clikit.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
GNOME_DIR = Path("/usr/share/icons/gnome/256x256")
ADWAITA_DIR = Path("/usr/share/icons/Adwaita")
MISSING = ("the real demo pool needs Debian's dataset-fashion-mnist and gnome-icon-theme: "
           "apt-get install -y dataset-fashion-mnist gnome-icon-theme adwaita-icon-theme")

# Fashion-MNIST's label order, in the eval folders' words.
FASHION_CLASSES: tuple[str, ...] = (
    "t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

# GNOME icon name -> the object it shows. Chosen by looking at the drawings: objects only
# (no arrows, emblems or file pages), one icon per object (printer-network, trophy-silver,
# video-display... would be near duplicates of another class's drawing), and no name that
# holds another class's name as a whole word (captions are matched by words).
_ICON_TABLE = """
ac-adapter=power plug; accessories-calculator=calculator; accessories-dictionary=open book;
accessories-text-editor=notepad; application-x-addon=puzzle piece; applications-development=trowel;
applications-graphics=paint palette; applications-office=pencil cup; audio-headphones=headphones;
audio-headset=headset; audio-input-microphone=microphone; audio-speakers=loudspeaker;
audio-x-generic=musical note; battery=battery; camera-photo=camera; camera-web=webcam;
computer=computer; dialog-error=no entry sign; dialog-information=light bulb; dialog-password=key;
dialog-warning=warning sign; drive-harddisk=hard drive; drive-optical=disc drive;
edit-find=magnifying glass; face-angel=angel; face-angry=angry face;
face-cool=face with sunglasses; face-crying=crying face; face-devilish=devil;
face-glasses=face with glasses; face-laugh=laughing face; face-sad=sad face;
face-smile=smiling face; face-surprise=surprised face; face-wink=winking face; folder=folder;
help-browser=life buoy; input-dialpad=keypad; input-keyboard=keyboard; input-mouse=mouse;
input-tablet=graphics tablet; mail-read=envelope; media-flash=memory card;
media-floppy=floppy disk; media-optical=compact disc; multimedia-player=music player;
network-server=server; package-x-generic=cardboard box; phone=mobile phone;
preferences-desktop-locale=flag; preferences-system=wrench;
preferences-system-privacy=combination lock; printer=printer; process-stop=stop sign;
scanner=scanner; security-medium=shield; starred=star; system-file-manager=filing cabinet;
system-log-out=exit sign; system-run=gears; system-shutdown=light switch; trophy-gold=trophy;
user-available=speech bubble; user-trash=trash can; video-x-generic=film reel; web-browser=globe;
x-office-address-book=address book
"""
ICONS: dict[str, str] = dict(entry.strip().split("=") for entry in _ICON_TABLE.replace("\n", " ").split(";"))

# Adwaita draws these names as something else (a file page), so they get no eval images.
_NOT_THE_SAME_THING = frozenset({"package-x-generic", "video-x-generic"})

# scikit-image's bundled photos (no download): loader name -> what it shows.
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut", "chelsea": "cat", "coffee": "cup of coffee", "rocket": "rocket",
    "camera": "cameraman", "horse": "horse", "coins": "coins", "clock": "clock",
    "brick": "brick wall", "grass": "grass",
}


def check_installed() -> None:
    """Raise the one-line UserError naming the Debian packages when one is missing."""
    needed = [FASHION_DIR / f"{split}-{part}-ubyte.gz" for split in ("train", "t10k")
              for part in ("images-idx3", "labels-idx1")]
    needed += [GNOME_DIR / "devices" / "printer.png", ADWAITA_DIR / "512x512" / "devices" / "printer.png"]
    if not all(p.is_file() for p in needed):
        raise UserError(MISSING)


@lru_cache(maxsize=None)
def fashion_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]) of the "train" or "t10k" split."""
    images = gzip.decompress((FASHION_DIR / f"{split}-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((FASHION_DIR / f"{split}-labels-idx1-ubyte.gz").read_bytes())
    # idx files: a big-endian header (magic, sizes), then the raw bytes.
    n = int.from_bytes(images[4:8], "big")
    return (np.frombuffer(images, np.uint8, offset=16).reshape(n, 28, 28),
            np.frombuffer(labels, np.uint8, offset=8))


@lru_cache(maxsize=None)
def fashion_unique(split: str) -> tuple[int, ...]:
    """Indices of a split whose pixels appear once (in train: once in train; in t10k: not in
    train either), so that no two rows and no eval image are exact copies of each other."""
    seen: dict[bytes, int] = {}
    if split == "t10k":
        seen = {img.tobytes(): 2 for img in fashion_split("train")[0]}
    images = fashion_split(split)[0]
    for img in images:
        key = img.tobytes()
        seen[key] = seen.get(key, 0) + 1
    return tuple(i for i, img in enumerate(images) if seen[img.tobytes()] == 1)


def _find_icon(root: Path, sizes: tuple[str, ...], name: str) -> Path | None:
    for size in sizes:
        for path in sorted((root / size).glob(f"*/{name}.png")):
            if path.is_file():
                return path
    return None


@lru_cache(maxsize=None)
def gnome_icon(name: str) -> Image.Image:
    """GNOME's 256 px RGBA drawing of `name`."""
    path = _find_icon(GNOME_DIR.parent, (GNOME_DIR.name,), name)
    if path is None:
        raise UserError(f"{name}.png is missing from {GNOME_DIR}; " + MISSING)
    with Image.open(path) as im:
        return im.convert("RGBA")


@lru_cache(maxsize=None)
def adwaita_path(name: str) -> Path | None:
    """Adwaita's own full-colour drawing of `name` (not its legacy copies), if there is one."""
    if name in _NOT_THE_SAME_THING:
        return None
    return _find_icon(ADWAITA_DIR, ("512x512", "256x256"), name)


@lru_cache(maxsize=None)
def adwaita_icon(name: str) -> Image.Image:
    """Adwaita's RGBA drawing of `name` (see adwaita_path), at 256 px like GNOME's."""
    path = adwaita_path(name)
    assert path is not None, name
    with Image.open(path) as im:
        icon = im.convert("RGBA")
    return icon.reduce(icon.width // 256) if icon.width > 256 else icon


def skimage_available() -> bool:
    """Whether scikit-image (and so its bundled photos) is installed."""
    return importlib.util.find_spec("skimage") is not None


@lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos as RGB."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _deb_version(package: str) -> str:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                              text=True, timeout=30)
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def versions() -> dict[str, str]:
    """The data the real pool is drawn from, with versions (recorded in demo.json)."""
    found = {"dataset-fashion-mnist (deb)": _deb_version("dataset-fashion-mnist"),
             "gnome-icon-theme (deb)": _deb_version("gnome-icon-theme"),
             "adwaita-icon-theme (deb)": _deb_version("adwaita-icon-theme")}
    try:
        found["scikit-image (pypi)"] = metadata.version("scikit-image") if skimage_available() else \
            "not installed: its photos are left out"
    except metadata.PackageNotFoundError:
        found["scikit-image (pypi)"] = "not installed: its photos are left out"
    return found
