"""Captions for the demo pool: paraphrased descriptions, web-style alt-text noise, and
the zero-shot prompt templates of the eval set.

A clean caption always names the class in the same words as the eval folder, the
colour and the count; most also name the background.
"""
from __future__ import annotations

import random
from dataclasses import replace

from curate.demo.render import BACKGROUNDS, COLOURS, ImageSpec

_PLURALS = {"cross": "crosses", "fish": "fish", "hourglass": "hourglasses", "lightning bolt": "lightning bolts"}
_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
_BACKGROUND_WORDS = {
    "plain": ("plain", "solid", "blank"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "polka-dot"),
    "gradient": ("gradient", "smooth gradient"),
    "checkered": ("checkered", "checkerboard"),
}

# {np}: "two small red stars"; {bg}: "striped"; {be}: "is"/"are".
_TEMPLATES_WITH_BACKGROUND = (
    "{np} on a {bg} background",
    "a picture of {np} on a {bg} background",
    "{np} against a {bg} backdrop",
    "clip art of {np}, {bg} background",
    "a simple graphic of {np} over a {bg} background",
    "{np} drawn on a {bg} background",
    "a photo of {np} in front of a {bg} background",
)
_TEMPLATES_WITHOUT_BACKGROUND = (
    "{np}",
    "a photo of {np}",
    "an illustration of {np}",
    "a drawing showing {np}",
    "there {be} {np} in this image",
    "icon: {np}",
)

# Zero-shot prompts for eval/templates.txt; "{}" is the class name.
EVAL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "an illustration of a {}.",
    "a picture of one {}.",
    "clip art of a {}.",
    "a {} on a plain background.",
    "a simple graphic of a {}.",
)

_GENERIC_FIXED = (
    "click here", "image", "photo", "untitled", "thumbnail", "download", "logo", "banner",
    "view larger", "stock photo", "no description available", "picture", "image not found",
    "product image", "featured image", "header", "default", "placeholder", "see more",
)


def plural(label: str) -> str:
    return _PLURALS.get(label, label + "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(label: str, colour: str, count: int, size_word: str | None, rng: random.Random) -> str:
    """'a large blue circle', 'two red stars', 'a pair of small pink hearts'."""
    words = [w for w in (size_word if rng.random() < 0.7 else None, colour) if w]
    head = " ".join(words + [label if count == 1 else plural(label)])
    count_word = rng.choice(_COUNT_WORDS[count])
    if count_word == "a":
        count_word = _article(head)
    return f"{count_word} {head}"


def describe(spec: ImageSpec, rng: random.Random, background: bool | None = None) -> str:
    """A natural caption of a spec; background=True forces a template naming the background."""
    if background is None:
        background = rng.random() < 0.6
    np_ = noun_phrase(spec.label, spec.colour, spec.count, spec.size_word, rng)
    template = rng.choice(_TEMPLATES_WITH_BACKGROUND if background else _TEMPLATES_WITHOUT_BACKGROUND)
    text = template.format(np=np_, bg=rng.choice(_BACKGROUND_WORDS[spec.background]),
                           be="is" if spec.count == 1 else "are")
    # Web captions are inconsistent about capitals and full stops.
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.25:
        text += "."
    return text


def partly_wrong(spec: ImageSpec, rng: random.Random) -> tuple[str, str]:
    """A caption right about the class but wrong about one attribute.

    Returns (caption, attribute) with attribute in {"colour", "count", "background"}.
    """
    attribute = rng.choices(("colour", "count", "background"), weights=(0.7, 0.15, 0.15))[0]
    if attribute == "colour":
        wrong = replace(spec, colour=rng.choice([c for c in COLOURS if c != spec.colour]))
    elif attribute == "count":
        wrong = replace(spec, count=rng.choice([c for c in (1, 2, 3) if c != spec.count]))
    else:
        wrong = replace(spec, background=rng.choice([b for b in BACKGROUNDS if b != spec.background]))
    return describe(wrong, rng, background=attribute == "background" or None), attribute


def generic_alt_text(rng: random.Random) -> str:
    """Alt text that says nothing about the image: file names, 'click here', 'image'."""
    kind = rng.random()
    if kind < 0.25:
        return f"IMG_{rng.randint(0, 9999):04d}.jpg"
    if kind < 0.35:
        return f"DSC{rng.randint(0, 99999):05d}.JPG"
    if kind < 0.45:
        return f"image{rng.randint(1, 40)}.png"
    if kind < 0.52:
        return (f"Screenshot {rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                f"at {rng.randint(0, 23)}.{rng.randint(0, 59):02d}.{rng.randint(0, 59):02d}")
    return rng.choice(_GENERIC_FIXED)
