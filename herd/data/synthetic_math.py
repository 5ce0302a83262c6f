"""Synthetic arithmetic word problems with worked solutions (the local corpus's math share).

Every problem is computed, not looked up: the solution shows each step and ends with
`Answer: N`, so the text is correct by construction. Templates vary the operation (sums,
differences, products, division with remainder, percentages, averages, multi-step purchases).
"""

from __future__ import annotations

import random
from collections.abc import Callable

NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena",
         "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yusuf"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells", "cards", "coins",
         "oranges", "buttons", "beads", "tickets", "candles"]
CONTAINERS = ["box", "bag", "crate", "jar", "basket", "packet"]
GROUPS = ["friends", "classmates", "cousins", "teammates", "neighbours"]


def _sum(r: random.Random) -> str:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b, c = r.randint(3, 500), r.randint(2, 300), r.randint(1, 200)
    return (f"Question: {name} has {a} {item}. {name} finds {b} more and is then given {c} more. "
            f"How many {item} does {name} have now?\n"
            f"Solution: {a} + {b} = {a + b}. Then {a + b} + {c} = {a + b + c}.\nAnswer: {a + b + c}")


def _difference(r: random.Random) -> str:
    name, other, item = r.choice(NAMES), r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(20, 900)
    b = r.randint(1, a - 1)
    return (f"Question: {name} had {a} {item} and gave {b} of them to {other}. How many {item} are left?\n"
            f"Solution: {a} - {b} = {a - b}.\nAnswer: {a - b}")


def _product(r: random.Random) -> str:
    item, box = r.choice(ITEMS), r.choice(CONTAINERS)
    a, b = r.randint(2, 60), r.randint(2, 40)
    return (f"Question: Each {box} holds {a} {item}. How many {item} are in {b} {box}s?\n"
            f"Solution: {b} × {a} = {a * b}.\nAnswer: {a * b}")


def _division(r: random.Random) -> str:
    name, item, group = r.choice(NAMES), r.choice(ITEMS), r.choice(GROUPS)
    b = r.randint(2, 12)
    a = r.randint(b + 1, 400)
    q, rem = divmod(a, b)
    return (f"Question: {name} shares {a} {item} equally among {b} {group}. How many {item} does each get, "
            f"and how many are left over?\n"
            f"Solution: {a} ÷ {b} = {q} remainder {rem}, because {b} × {q} = {b * q} and {a} - {b * q} = {rem}.\n"
            f"Answer: {q} each, {rem} left over")


def _purchase(r: random.Random) -> str:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    n, price = r.randint(2, 15), r.randint(1, 30)
    cost = n * price
    paid = ((cost // 10) + r.randint(1, 5)) * 10
    return (f"Question: {name} buys {n} {item} at {price} dollars each and pays with {paid} dollars. "
            f"How much change does {name} get?\n"
            f"Solution: The {item} cost {n} × {price} = {cost} dollars. The change is {paid} - {cost} = "
            f"{paid - cost} dollars.\nAnswer: {paid - cost}")


def _rate(r: random.Random) -> str:
    speed, h1, h2 = r.randint(20, 120), r.randint(1, 9), r.randint(1, 9)
    d1, d2 = speed * h1, speed * h2
    return (f"Question: A train travels at {speed} km per hour. It runs for {h1} hours, stops, then runs "
            f"for {h2} more hours. How far does it travel in total?\n"
            f"Solution: First part: {speed} × {h1} = {d1} km. Second part: {speed} × {h2} = {d2} km. "
            f"Total: {d1} + {d2} = {d1 + d2} km.\nAnswer: {d1 + d2}")


def _percentage(r: random.Random) -> str:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    pct, total = 5 * r.randint(1, 19), 20 * r.randint(1, 40)
    part = pct * total // 100
    return (f"Question: {name} has {total} {item} and sells {pct}% of them. How many {item} does "
            f"{name} sell, and how many remain?\n"
            f"Solution: {pct}% of {total} is {pct} × {total} ÷ 100 = {part}. Remaining: {total} - {part} = "
            f"{total - part}.\nAnswer: {part} sold, {total - part} remain")


def _average(r: random.Random) -> str:
    name = r.choice(NAMES)
    n = r.randint(3, 6)
    mean = r.randint(50, 90)
    scores = [mean + r.randint(-9, 9) for _ in range(n - 1)]
    scores.append(mean * n - sum(scores))
    total = sum(scores)
    return (f"Question: {name} scored {', '.join(map(str, scores[:-1]))} and {scores[-1]} points in {n} games. "
            f"What is the average score?\n"
            f"Solution: The total is {' + '.join(map(str, scores))} = {total}. The average is {total} ÷ {n} = "
            f"{total // n}.\nAnswer: {total // n}")


def _multi_step(r: random.Random) -> str:
    name, item, box = r.choice(NAMES), r.choice(ITEMS), r.choice(CONTAINERS)
    start, packs, per_pack = r.randint(0, 50), r.randint(2, 9), r.randint(3, 24)
    bought = packs * per_pack
    used = r.randint(1, start + bought)
    end = start + bought - used
    return (f"Question: {name} starts with {start} {item}, buys {packs} {box}s of {per_pack} {item} each, "
            f"and then uses {used} of them. How many {item} are left?\n"
            f"Solution: The {box}s hold {packs} × {per_pack} = {bought} {item}. Together: {start} + {bought} = "
            f"{start + bought}. After using {used}: {start + bought} - {used} = {end}.\nAnswer: {end}")


TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _sum, _difference, _product, _division, _purchase, _rate, _percentage, _average, _multi_step,
)


def word_problem(rng: random.Random) -> str:
    """One problem with its worked solution, drawn from `rng` (deterministic for a seeded rng)."""
    return rng.choice(TEMPLATES)(rng)
