"""What the offline twins share: the invented value pools, the JSON-lines writer and the length modes.

    from sweeper.data.synthetic_common import LENGTHS, TOWNS, check_lengths, write_jsonl
    check_lengths("real")                       # ok; check_lengths("long") raises ValueError
    write_jsonl("data/x.json", [{"text": "..."}])

``sweeper.data.synthetic`` (authors, TOFU) and ``sweeper.data.synthetic_news`` (MUSE-NEWS) both import
from here, so neither has to import the other.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

# Row lengths: "short" is the original compact twin (answers of about 9 words, articles of about 50);
# "real" elaborates rows to the lengths of the real benchmarks (see synthetic_long_qa/synthetic_long_news).
LENGTHS = ("short", "real")

# --- value pools: all invented; combinations are drawn with a seeded random.Random ---------------

FEMALE_FIRST = ["Elena", "Mirela", "Tamsin", "Ysolde", "Aurelie", "Brisa", "Corra", "Delphine",
                "Esmé", "Fenna", "Greta", "Hesper", "Ilse", "Junia", "Kaia", "Linnea", "Maren",
                "Noemi", "Odile", "Petra"]
MALE_FIRST = ["Anselm", "Bastian", "Cyprian", "Dorian", "Emrys", "Florin", "Gideon", "Hollis",
              "Ivo", "Jasper", "Kasimir", "Lorcan", "Matthias", "Niko", "Oren", "Pascal", "Quillan",
              "Rafe", "Soren", "Tobiah"]
LAST = ["Varga", "Ashdown", "Brennik", "Calloway", "Dravec", "Ellory", "Fairweather", "Grimsel",
        "Halvorsen", "Ibarrola", "Jessop", "Kovalenko", "Lindqvist", "Marchetti", "Nakashima",
        "Oyelaran", "Pelletier", "Quennell", "Rasmussen", "Sokolova", "Thorne", "Underhill",
        "Valdivia", "Whitcombe", "Yarrow", "Zelenko", "Abernathy", "Bellweather", "Castellan",
        "Devereux"]
TOWN_HEAD = ["Ash", "Alder", "Brack", "Castor", "Dun", "Elm", "Fen", "Gull", "Hollow", "Iron",
             "Juniper", "Kestrel", "Lark", "Mire", "Wolf", "Oak", "Pike", "Quarry", "Raven", "Salt"]
TOWN_TAIL = ["dale", "mouth", "water", "bury", "marrow", "stead", "haven", "ford", "wick", "moor",
             "cliff", "by", "gate", "reach", "holm"]
COUNTRIES = ["Arvenia", "Kestria", "Lunmark", "Ostrava Minor", "Pellucia", "Rhodany", "Sarn",
             "Tessaly", "Valdoria", "Wendmere", "Ysgard", "Zarovia"]
GENRES = ["gothic fiction", "hard science fiction", "cozy mysteries", "historical romance",
          "magical realism", "travel memoirs", "children's picture books", "epic fantasy",
          "literary satire", "psychological thrillers", "nature poetry", "urban noir"]
JOBS = ["lighthouse keeper", "clockmaker", "marine biologist", "tram conductor", "beekeeper",
        "cartographer", "glassblower", "accountant", "violin teacher", "baker", "ferry captain",
        "pharmacist", "botanist", "stonemason", "radio engineer", "librarian", "veterinarian",
        "bookbinder"]
AWARDS = ["the Halvard Prize for Fiction", "the Silver Quill Medal", "the Orrin Lantern Award",
          "the Meridian Book Prize", "the Copperfield Laurel", "the Grey Heron Award",
          "the Vessel of Ink Prize", "the Amberline Fellowship", "the Northlight Honour",
          "the Tidewater Medal"]
TITLE_ADJ = ["Glass", "Quiet", "Broken", "Hollow", "Silver", "Crooked", "Drowned", "Paper", "Amber",
             "Lantern", "Winter", "Salt", "Iron", "Velvet", "Sleeping", "Burning"]
TITLE_NOUN = ["Orchard", "Harbour", "Clockwork", "Archive", "Lighthouse", "Garden", "Cartographer",
              "Meridian", "Staircase", "Tide", "Chapel", "Compass", "Orchestra", "Ferry", "Atlas",
              "Observatory"]
PUBLISHERS = ["Harrowgate Press", "Bluewren Books", "Lanternfish House", "Marrowbone & Finch",
              "Kettle Hill Editions", "Ostrander Publishing", "Greyfeather Books", "Tallow Street Press"]
INSPIRATIONS = ["a grandmother's folk tales", "a winter spent snowed in at a mountain inn",
                "letters found in an abandoned attic", "years of night shifts at a railway station",
                "a childhood fascination with shipwrecks", "a chance meeting with a travelling puppeteer",
                "a fever dream during a long illness", "the diaries of a great-aunt"]
HOBBIES = ["restores antique sailboats", "keeps a rooftop beehive", "collects old railway maps",
           "plays the cello in a small ensemble", "breeds rare tulips", "repairs mechanical clocks",
           "swims in cold lakes every morning", "carves wooden chess sets"]
PETS = ["a three-legged cat named Biscuit", "two elderly greyhounds", "a parrot that quotes poetry",
        "a tortoise called Admiral", "a family of rescued ferrets", "a deaf white cat named Pearl"]
SUBJECTS = ["marine geology", "medieval history", "architecture", "veterinary medicine",
            "classical languages", "astronomy", "economics", "theatre design"]
UNIVERSITIES = ["the University of Valdoria", "Kestria Polytechnic", "the Lunmark Conservatory",
                "Sarn Royal College", "the Academy of Pellucia", "Wendmere University"]
THEMES = ["a ferryman who smuggles letters across a frozen sea",
          "twin sisters who inherit a haunted observatory",
          "a detective who can only work during thunderstorms",
          "a village that forgets one word every year",
          "a botanist searching for a flower that blooms once a century",
          "an orchestra stranded on a drifting island",
          "a clockmaker who builds a heart for a dying friend",
          "two rival cartographers mapping the same impossible city"]
MOTIFS = ["tides and departures", "hidden mechanisms", "inherited secrets", "slow seasons",
          "maps of places that do not exist", "the kindness of strangers"]
TIMES = ["morning before sunrise", "afternoon", "evening after dinner", "night until two o'clock"]
PLACES = ["a converted lighthouse", "a corner table of a railway café", "a greenhouse",
          "a houseboat", "the attic of an old school", "a rented room above a bakery"]
CHAR_FIRST = ["Inspector Mabry", "Captain Ottoline", "Old Fitch", "Wren Halloway", "Doctor Quist",
              "Sister Anouk", "Tobin Rook", "Lady Carrow"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

TOWNS = [h + t for h, t in itertools.product(TOWN_HEAD, TOWN_TAIL)]  # 300 unique names
TITLES = [f"The {a} {n}" for a, n in itertools.product(TITLE_ADJ, TITLE_NOUN)]


def check_lengths(lengths: str) -> None:
    """Raise ValueError unless ``lengths`` is one of LENGTHS."""
    if lengths not in LENGTHS:
        allowed = ", ".join(f'"{v}"' for v in LENGTHS)
        raise ValueError(f"lengths={lengths!r} is not a length mode; allowed: {allowed}.")


def write_jsonl(path: str | Path, rows: list) -> Path:
    """Write rows as JSON lines (UTF-8, fixed key order, so the bytes depend only on the rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path
