"""Writes the shipped lm-eval tasks' items: `python anatomy/data/lm_eval_tasks/make_items.py`.

Every item is written here by the project (no outside data set, so the files carry the project's license):
- facts.jsonl: the 30 facts of tasks.json (beside this file: the layer plans' items before they were scored
  through lm-eval), then more in the same style (capitals, opposites,
  the order of days and months, young animals, chemical symbols, authors and painters, everyday facts), each a
  sentence whose next word is the answer;
- arithmetic.jsonl: 200 distinct additions of two numbers in 10..49 (seed 27), each after the same three-line
  few-shot prefix as tasks.json, so the prefix is part of the prompt (zero-shot for lm-eval).
The answer starts with its space: the YAMLs join prompt and answer with no delimiter, as tasks.json does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILT_IN = HERE / "tasks.json"
ADDITIONS = 200
SEED = 27

MORE_FACTS = [
    *[(f"The capital of {country} is", f" {city}") for country, city in [
        ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
        ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Ireland", "Dublin"),
        ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"), ("Turkey", "Ankara"),
        ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
        ("Canada", "Ottawa"), ("Australia", "Canberra"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"),
        ("Cuba", "Havana"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Scotland", "Edinburgh")]],
    *[(f"The opposite of {word} is", f" {other}") for word, other in [
        ("cold", "hot"), ("down", "up"), ("big", "small"), ("fast", "slow"), ("light", "dark"),
        ("happy", "sad"), ("old", "young"), ("open", "closed"), ("left", "right"), ("wet", "dry"),
        ("early", "late"), ("rich", "poor"), ("strong", "weak"), ("loud", "quiet")]],
    *[(f"The day after {day} is", f" {following}") for day, following in [
        ("Tuesday", "Wednesday"), ("Wednesday", "Thursday"), ("Thursday", "Friday"), ("Friday", "Saturday"),
        ("Saturday", "Sunday"), ("Sunday", "Monday")]],
    *[(f"The month after {month} is", f" {following}") for month, following in [
        ("January", "February"), ("February", "March"), ("March", "April"), ("April", "May"), ("May", "June"),
        ("June", "July"), ("July", "August"), ("August", "September"), ("September", "October"),
        ("October", "November"), ("November", "December")]],
    *[(f"A baby {animal} is called a", f" {young}") for animal, young in [
        ("sheep", "lamb"), ("cow", "calf"), ("horse", "foal"), ("frog", "tadpole"), ("goat", "kid"),
        ("bear", "cub"), ("duck", "duckling")]],
    *[(f"The chemical symbol for {element} is", f" {symbol}") for element, symbol in [
        ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("oxygen", "O"), ("carbon", "C"), ("helium", "He")]],
    ("Hamlet was written by William", " Shakespeare"), ("The Starry Night was painted by Vincent van", " Gogh"),
    ("The telephone was invented by Alexander Graham", " Bell"), ("Pride and Prejudice was written by Jane", " Austen"),
    ("The theory of evolution was proposed by Charles", " Darwin"),
    ("The first man to walk on the moon was Neil", " Armstrong"),
    ("The color of snow is", " white"), ("The color of a ripe banana is", " yellow"),
    ("The color of coal is", " black"), ("The color of blood is", " red"),
    ("The closest star to the Earth is the", " Sun"), ("The Earth goes around the", " Sun"),
    ("The largest ocean on Earth is the", " Pacific"), ("The longest river in Africa is the", " Nile"),
    ("Cows give us", " milk"), ("Hens lay", " eggs"), ("Spiders have eight", " legs"),
    ("Ice is frozen", " water"), ("The opposite of north is", " south"), ("The opposite of east is", " west"),
    ("There are sixty minutes in an", " hour"), ("There are sixty seconds in a", " minute"),
    ("There are twenty-four hours in a", " day"), ("The last month of the year is", " December"),
    ("Two plus two equals", " four"), ("The number after nine is", " ten"),
]


def facts() -> list[dict[str, str]]:
    """The built-in facts, then the ones above; refuses a duplicate prompt."""
    built_in = json.loads(BUILT_IN.read_text(encoding="utf-8"))["tasks"]["facts"]["items"]
    items = [{"prompt": i["prompt"], "answer": i["answer"]} for i in built_in]
    items += [{"prompt": p, "answer": a} for p, a in MORE_FACTS]
    prompts = [i["prompt"] for i in items]
    assert len(set(prompts)) == len(prompts), "duplicate fact"
    return items


def arithmetic() -> list[dict[str, str]]:
    """Distinct additions a + b (10 <= a, b <= 49) after tasks.json's few-shot prefix, the prefix's own left out."""
    prefix = json.loads(BUILT_IN.read_text(encoding="utf-8"))["tasks"]["arithmetic"]["prefix"]
    shown = {line.split(" =")[0] for line in prefix.splitlines()}
    rng, seen, items = random.Random(SEED), set(), []
    while len(items) < ADDITIONS:
        a, b = rng.randint(10, 49), rng.randint(10, 49)
        question = f"{a} + {b}"
        if question in seen or question in shown:
            continue
        seen.add(question)
        items.append({"prompt": f"{prefix}{question} =", "answer": f" {a + b}"})
    return items


def write(name: str, items: list[dict[str, str]]) -> None:
    (HERE / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")


if __name__ == "__main__":
    write("facts", facts())
    write("arithmetic", arithmetic())
