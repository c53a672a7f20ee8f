"""A small dataset of short factual sentences, the shape of the study's training data, made here from templates.

The study's growth result (validation loss 0.127 vs 0.599) came from a tiny dataset of short factual
sentences like its 12 prompts ("the capital of france is"). This module writes a few hundred such
sentences deterministically (capitals, continents, languages, chemical symbols, planets, animal young,
days, months, opposites, small sums), and `fact_split` divides them into train / validation / test
by sentence with the project's hash split, so no sentence is on two sides. Paraphrases of one fact
(two templates for capitals) may fall on both sides, as they would in any sentence-level split.
"""

from __future__ import annotations

from anatomy.corpus import CorpusSplit, split_documents

COUNTRIES = [  # country, capital, continent, language
    ("France", "Paris", "Europe", "French"), ("Germany", "Berlin", "Europe", "German"),
    ("Italy", "Rome", "Europe", "Italian"), ("Spain", "Madrid", "Europe", "Spanish"),
    ("Portugal", "Lisbon", "Europe", "Portuguese"), ("Greece", "Athens", "Europe", "Greek"),
    ("Poland", "Warsaw", "Europe", "Polish"), ("Sweden", "Stockholm", "Europe", "Swedish"),
    ("Norway", "Oslo", "Europe", "Norwegian"), ("Finland", "Helsinki", "Europe", "Finnish"),
    ("Denmark", "Copenhagen", "Europe", "Danish"), ("Austria", "Vienna", "Europe", "German"),
    ("Hungary", "Budapest", "Europe", "Hungarian"), ("Ireland", "Dublin", "Europe", "English"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch"), ("Czechia", "Prague", "Europe", "Czech"),
    ("Japan", "Tokyo", "Asia", "Japanese"), ("China", "Beijing", "Asia", "Chinese"),
    ("India", "New Delhi", "Asia", "Hindi"), ("Thailand", "Bangkok", "Asia", "Thai"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese"), ("South Korea", "Seoul", "Asia", "Korean"),
    ("Indonesia", "Jakarta", "Asia", "Indonesian"), ("Turkey", "Ankara", "Asia", "Turkish"),
    ("Iran", "Tehran", "Asia", "Persian"), ("Egypt", "Cairo", "Africa", "Arabic"),
    ("Kenya", "Nairobi", "Africa", "Swahili"), ("Nigeria", "Abuja", "Africa", "English"),
    ("Morocco", "Rabat", "Africa", "Arabic"), ("Ethiopia", "Addis Ababa", "Africa", "Amharic"),
    ("Ghana", "Accra", "Africa", "English"), ("Canada", "Ottawa", "North America", "English"),
    ("Mexico", "Mexico City", "North America", "Spanish"), ("Cuba", "Havana", "North America", "Spanish"),
    ("Brazil", "Brasilia", "South America", "Portuguese"), ("Argentina", "Buenos Aires", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"), ("Chile", "Santiago", "South America", "Spanish"),
    ("Colombia", "Bogota", "South America", "Spanish"), ("Australia", "Canberra", "Oceania", "English"),
]
ELEMENTS = [("hydrogen", "H"), ("helium", "He"), ("carbon", "C"), ("nitrogen", "N"), ("oxygen", "O"),
            ("sodium", "Na"), ("magnesium", "Mg"), ("aluminium", "Al"), ("silicon", "Si"), ("sulfur", "S"),
            ("chlorine", "Cl"), ("potassium", "K"), ("calcium", "Ca"), ("iron", "Fe"), ("copper", "Cu"),
            ("zinc", "Zn"), ("silver", "Ag"), ("tin", "Sn"), ("gold", "Au"), ("mercury", "Hg"), ("lead", "Pb"),
            ("uranium", "U"), ("neon", "Ne"), ("argon", "Ar"), ("nickel", "Ni"), ("platinum", "Pt")]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth"]
YOUNG = [("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("horse", "foal"), ("sheep", "lamb"),
         ("goat", "kid"), ("pig", "piglet"), ("duck", "duckling"), ("goose", "gosling"), ("frog", "tadpole"),
         ("bear", "cub"), ("lion", "cub"), ("kangaroo", "joey"), ("deer", "fawn"), ("owl", "owlet"),
         ("swan", "cygnet"), ("hen", "chick"), ("whale", "calf")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("light", "dark"),
             ("early", "late"), ("full", "empty"), ("open", "closed"), ("wet", "dry"), ("hard", "soft"),
             ("high", "low"), ("old", "new"), ("strong", "weak"), ("rich", "poor"), ("heavy", "light"),
             ("near", "far"), ("thick", "thin"), ("loud", "quiet"), ("long", "short"), ("true", "false")]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]


def fact_sentences() -> list[str]:
    """344 short true sentences, in a fixed order (no randomness: the same list on every machine)."""
    out = []
    for country, capital, continent, language in COUNTRIES:
        out += [f"The capital of {country} is {capital}.", f"{capital} is the capital of {country}.",
                f"{country[0].upper() + country[1:]} is in {continent}.",
                f"The main language of {country} is {language}."]
    out += [f"The chemical symbol of {name} is {symbol}." for name, symbol in ELEMENTS]
    out += [f"{planet} is the {ORDINALS[i]} planet from the Sun." for i, planet in enumerate(PLANETS)]
    out += [f"A young {animal} is called a {young}." for animal, young in YOUNG]
    out += [f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}." for i in range(7)]
    out += [f"{m} is the {ORDINALS[i]} month of the year." for i, m in enumerate(MONTHS)]
    out += [f"The month after {MONTHS[i]} is {MONTHS[(i + 1) % 12]}." for i in range(12)]
    out += [f"The opposite of {a} is {b}." for a, b in OPPOSITES]
    out += [f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}." for a in range(1, 10)
            for b in range(1, 10)]
    return out


def fact_split() -> CorpusSplit:
    """Train / validation / test by sentence (10% each held out), with the project's deterministic hash split."""
    return split_documents({s: s for s in fact_sentences()}, validation_fraction=0.1, test_fraction=0.1,
                           salt="growth-facts")
