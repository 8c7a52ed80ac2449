"""Captions of the real demo pool: paraphrased templates that name the class in the eval
folder's words, and the one-wrong-detail captions of "partial" rows.

A product photo's caption names its colour (the photo is tinted, see curate.demo.real)
and sometimes its ground; an icon's names its ground sometimes; a photo's only the class.
"""
from __future__ import annotations

import random

# Ground colours behind products and icons: caption word -> RGB.
GROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250), "light grey": (224, 224, 224), "cream": (245, 238, 214),
    "pale blue": (214, 228, 246), "pale green": (216, 238, 216), "pale pink": (246, 222, 230),
}
# Colours the grey Fashion-MNIST photos are tinted with: caption word -> RGB.
TINTS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "orange": (230, 120, 20), "yellow": (215, 180, 20), "green": (40, 140, 60),
    "blue": (40, 80, 200), "purple": (120, 50, 170), "pink": (220, 90, 160), "brown": (120, 75, 40),
    "black": (25, 25, 25), "grey": (110, 110, 110),
}

# Classes that are counted in pairs, sets or piles: (singular lead, plural lead).
_LEADS = {"trousers": ("a pair of", "pairs of"), "headphones": ("a pair of", "pairs of"),
          "gears": ("a set of", "sets of"), "coins": ("a pile of", "piles of"), "grass": ("a patch of", "patches of")}
_PLURALS = {"mouse": "mice", "cameraman": "cameramen", "cup of coffee": "cups of coffee", "dress": "dresses",
            "face with sunglasses": "faces with sunglasses", "face with glasses": "faces with glasses"}
_COUNTS = {2: ("two", "2", "a couple of"), 3: ("three", "3")}

# {np}: "a red sneaker"; {bg}: "pale blue".
_PRODUCT_TEMPLATES = ("{np}", "a photo of {np}", "{np}, product photo", "studio shot of {np}",
                      "catalogue picture of {np}", "{np} for sale", "a product photo of {np}")
_PRODUCT_GROUND_TEMPLATES = ("{np} on a {bg} background", "product photo of {np} on a {bg} background",
                             "{np} against a {bg} backdrop", "a photo of {np} on {bg}")
_ICON_TEMPLATES = ("an icon of {np}", "{np} icon", "{np}, flat icon", "a desktop icon showing {np}",
                   "a glossy icon of {np}", "clip art of {np}")
_ICON_GROUND_TEMPLATES = ("an icon of {np} on a {bg} background", "{np} icon, {bg} background",
                          "clip art of {np} on a {bg} background")
_PHOTO_TEMPLATES = ("a photo of {np}", "{np}", "a picture of {np}", "photograph of {np}", "{np}, stock photo",
                    "a close-up photo of {np}")

# Zero-shot prompts for eval/templates.txt; "{}" is the class name.
REAL_EVAL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a product photo of a {}.", "an icon of a {}.", "a picture of a {}.",
    "a {} on a plain background.", "a close-up photo of a {}.", "an image of a {}.",
)


def plural(label: str) -> str:
    """The plural of a class name ('sneakers', 'mice', 'trophies', 'brick walls')."""
    if label in _PLURALS:
        return _PLURALS[label]
    if label.endswith(("s", "sh", "ch", "x")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in tuple("aeiou"):
        return label[:-1] + "ies"
    return label + "s"


def noun_phrase(label: str, count: int, colour: str | None, rng: random.Random) -> str:
    """'a red sneaker', 'a pair of blue trousers', 'two angry faces', 'an astronaut'."""
    head = f"{colour} {label}" if colour else label
    if label in _LEADS:
        lead, leads = _LEADS[label]
        return f"{lead} {head}" if count == 1 else f"{rng.choice(_COUNTS[count])} {leads} {head}"
    if count == 1:
        return f"{'an' if head[0] in 'aeiou' else 'a'} {head}"
    words = f"{colour} {plural(label)}" if colour else plural(label)
    return f"{rng.choice(_COUNTS[count])} {words}"


def caption(origin: str, label: str, rng: random.Random, *, colour: str | None = None, ground: str | None = None,
            count: int = 1, force_ground: bool = False) -> str:
    """A caption of a product ('fashion'), icon ('icon') or photo ('photo') of `label`."""
    np_ = noun_phrase(label, count, colour, rng)
    if origin == "photo":
        template = rng.choice(_PHOTO_TEMPLATES)
    else:
        grounds, plain = ((_PRODUCT_GROUND_TEMPLATES, _PRODUCT_TEMPLATES) if origin == "fashion"
                          else (_ICON_GROUND_TEMPLATES, _ICON_TEMPLATES))
        template = rng.choice(grounds if force_ground or rng.random() < 0.4 else plain)
    text = template.format(np=np_, bg=ground)
    # Web captions are inconsistent about capitals and full stops.
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.25:
        text += "."
    return text


def partly_wrong_caption(origin: str, label: str, rng: random.Random, *, colour: str | None = None,
                         ground: str | None = None) -> str:
    """The right class with one wrong detail: the colour of a product, the ground of an
    icon, or how many there are ('two cats' of one cat)."""
    detail = "count"
    if origin == "fashion" and rng.random() < 0.7:
        detail = "colour"
    elif origin == "icon" and rng.random() < 0.5:
        detail = "ground"
    if detail == "colour":
        wrong = rng.choice([c for c in TINTS if c != colour])
        return caption(origin, label, rng, colour=wrong, ground=ground)
    if detail == "ground":
        wrong = rng.choice([g for g in GROUNDS if g != ground])
        return caption(origin, label, rng, colour=colour, ground=wrong, force_ground=True)
    return caption(origin, label, rng, colour=colour, ground=ground, count=rng.choice((2, 3)))
