"""Synthetic visual question answering: scenes of 2-3 coloured shapes drawn with PIL, and questions
whose answers are in the picture (colour of a shape, shape of a colour, where a shape is).

Real pixels with known answers, generated offline and deterministic from a seed. Some colour-shape
pairs are held out of training (`HELD_OUT`): a model that only memorised pairs fails on them, one
that binds colour and shape from the image does not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (235, 210, 20),
           "purple": (140, 40, 170), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle", "star")
COLUMNS = ("left", "middle", "right")
HELD_OUT = frozenset({("red", "triangle"), ("blue", "star"), ("green", "circle"), ("yellow", "square")})
QUESTION_KINDS = ("colour", "shape", "position")


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    column: int     # 0..2
    row: int        # 0..2


@dataclass(frozen=True)
class Question:
    image: Image.Image
    things: tuple[Thing, ...]
    kind: str
    text: str
    answer: str


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    points = []   # a five-pointed star
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def draw_scene(things: tuple[Thing, ...], size: int, rng: random.Random) -> Image.Image:
    """Shapes on a light background, each in its cell of a 3x3 grid with jitter in size and place."""
    shade = rng.randint(225, 255)
    image = Image.new("RGB", (size, size), (shade, shade, shade))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for t in things:
        r = cell * rng.uniform(0.28, 0.40)
        cx = (t.column + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (t.row + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        colour = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[t.colour])
        if t.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon(_polygon(t.shape, cx, cy, r), fill=colour)
    return image


def random_things(rng: random.Random, *, held_out: bool) -> tuple[Thing, ...]:
    """2-3 things with distinct colours, shapes and columns; with `held_out` one of them is a held-out
    pair, else none is."""
    while True:
        n = rng.choice((2, 3))
        colours = rng.sample(sorted(COLOURS), n)
        shapes = rng.sample(SHAPES, n)
        pairs = set(zip(colours, shapes))
        if held_out != bool(pairs & HELD_OUT):
            continue
        columns = rng.sample(range(3), n)
        return tuple(Thing(c, s, col, rng.randrange(3)) for c, s, col in zip(colours, shapes, columns))


def ask(things: tuple[Thing, ...], kind: str, rng: random.Random) -> tuple[str, str]:
    """(question, one-word answer) about one of the things."""
    target = rng.choice(things)
    if kind == "colour":
        return f"What color is the {target.shape}?", target.colour
    if kind == "shape":
        return f"Which shape is {target.colour}?", target.shape
    return f"Is the {target.shape} on the left, in the middle or on the right?", COLUMNS[target.column]


def questions(count: int, seed: int, *, size: int = 224, held_out: bool = False,
              kinds: tuple[str, ...] = QUESTION_KINDS) -> Iterator[Question]:
    """`count` fresh scenes with one question each; `held_out` scenes each contain a held-out pair and
    their question asks about it."""
    rng = random.Random(seed)
    for i in range(count):
        things = random_things(rng, held_out=held_out)
        kind = kinds[i % len(kinds)]
        if held_out:   # ask about the held-out thing itself
            focus = tuple(t for t in things if (t.colour, t.shape) in HELD_OUT)[:1]
            text, answer = ask(focus, kind, rng)
        else:
            text, answer = ask(things, kind, rng)
        yield Question(draw_scene(things, size, rng), things, kind, text, answer)
