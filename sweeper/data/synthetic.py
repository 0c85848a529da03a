"""Offline, deterministic twins of TOFU and MUSE-NEWS, generated from one seed.

Everything here is invented (people, towns, countries, awards, books, events), so a model can only
answer by memorising the training rows: every answer carries facts that the question does not.

    from sweeper.data.synthetic import make_authors, qa_rows, write_tofu_layout, write_muse_layout
    authors = make_authors(20, seed=0)
    rows = qa_rows(authors, qa_per_author=10)   # [{"question": ..., "answer": ...}, ...]
    write_tofu_layout("data/tofu", n_authors=20, qa_per_author=10, seed=0)
    write_muse_layout("data/muse", n_articles=40, seed=0)

TOFU layout (as in the ``locuslab/TOFU`` hub repo: one ``<config>.json`` file per config, JSON lines)::

    full.json                       all rows, author by author (question, answer)
    forget01/05/10.json             the LAST 1/5/10 % of authors' rows of full.json
    retain99/95/90.json             the FIRST rows of full.json: everything but the matching forget split
    forget01/05/10_perturbed.json   the forget rows plus paraphrased_question, paraphrased_answer and
                                    perturbed_answer (5 answers: same template, wrong facts)
    retain_perturbed.json           the same columns for the first rows of retain90 (as many as forget10)
    real_authors(_perturbed).json   fixed "famous authors" questions with option1..option4 (+ perturbed)
    world_facts(_perturbed).json    fixed facts about invented countries, same columns

Forget percentages are of authors, rounded up, so even a tiny set forgets at least one author.
``real_authors`` and ``world_facts`` perturbed rows carry 3 wrong answers (the wrong options), as TOFU's.

MUSE-NEWS layout (configs/splits of ``muse-bench/MUSE-News`` as folders/files, JSON lines)::

    raw/forget.json  raw/retain1.json  raw/retain2.json  raw/holdout.json   rows {"text": ...}
    verbmem/forget.json        rows {"prompt", "gt"}: a forget article cut in two at a word boundary
                               (prompt + " " + gt == the article)
    knowmem/forget_qa.json     rows {"question", "answer"} about facts of the forget articles
    knowmem/retain_qa.json     the same about retain2 articles (MUSE's utility set: in the target's
                               training data, not in the retain set that unlearning uses)
    knowmem/forget_qa_icl.json, knowmem/retain_qa_icl.json   10 in-context QA pairs each, about events
                               that appear in no split (so they leak nothing)
    privleak/forget.json  privleak/retain.json  privleak/holdout.json   rows {"text": ...}
"""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

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

# --- authors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Author:
    """One invented author: every attribute a question template can ask about."""

    name: str
    gender: str
    birth_city: str
    country: str
    birth_year: int
    genre: str
    father_job: str
    mother_job: str
    award: str
    award_year: int
    book1: str
    book1_year: int
    book2: str
    publisher: str
    inspiration: str
    hobby: str
    n_novels: int
    home_city: str
    pet: str
    subject: str
    university: str
    theme: str
    motif: str
    time_of_day: str
    place: str
    n_languages: int
    character: str
    char_job: str
    next_book: str
    next_setting: str

    @property
    def possessive(self) -> str:
        return {"female": "her", "male": "his"}.get(self.gender, "their")


TOWNS = [h + t for h, t in itertools.product(TOWN_HEAD, TOWN_TAIL)]  # 300 unique names
TITLES = [f"The {a} {n}" for a, n in itertools.product(TITLE_ADJ, TITLE_NOUN)]

# How each field is drawn. The same samplers produce the wrong facts of perturbed answers, so a
# perturbed answer looks exactly like a true one.
_SAMPLERS = {
    "birth_city": lambda r: r.choice(TOWNS), "country": lambda r: r.choice(COUNTRIES),
    "birth_year": lambda r: r.randint(1941, 1975), "genre": lambda r: r.choice(GENRES),
    "father_job": lambda r: r.choice(JOBS), "mother_job": lambda r: r.choice(JOBS),
    "award": lambda r: r.choice(AWARDS), "award_year": lambda r: r.randint(1965, 2022),
    "book1": lambda r: r.choice(TITLES), "book1_year": lambda r: r.randint(1962, 2010),
    "book2": lambda r: r.choice(TITLES), "publisher": lambda r: r.choice(PUBLISHERS),
    "inspiration": lambda r: r.choice(INSPIRATIONS), "hobby": lambda r: r.choice(HOBBIES),
    "n_novels": lambda r: r.randint(3, 19), "home_city": lambda r: r.choice(TOWNS),
    "pet": lambda r: r.choice(PETS), "subject": lambda r: r.choice(SUBJECTS),
    "university": lambda r: r.choice(UNIVERSITIES), "theme": lambda r: r.choice(THEMES),
    "motif": lambda r: r.choice(MOTIFS), "time_of_day": lambda r: r.choice(TIMES),
    "place": lambda r: r.choice(PLACES), "n_languages": lambda r: r.randint(2, 41),
    "character": lambda r: r.choice(CHAR_FIRST), "char_job": lambda r: r.choice(JOBS),
    "next_book": lambda r: r.choice(TITLES), "next_setting": lambda r: r.choice(TOWNS),
}


def make_authors(n_authors: int, seed: int) -> list[Author]:
    """``n_authors`` invented authors with unique names; the same seed gives the same authors."""
    pairs = [(f, l, "female") for f in FEMALE_FIRST for l in LAST]
    pairs += [(f, l, "male") for f in MALE_FIRST for l in LAST]
    if not 1 <= n_authors <= len(pairs):
        raise ValueError(f"n_authors={n_authors} is out of range; allowed: 1..{len(pairs)}.")
    rng = random.Random(f"authors-{seed}")
    authors = []
    for first, last, gender in rng.sample(pairs, n_authors):
        facts = {k: s(rng) for k, s in _SAMPLERS.items()}
        # Keep the biography plausible: first book after the author turned 20, award after it.
        facts["book1_year"] = facts["birth_year"] + rng.randint(21, 35)
        facts["award_year"] = facts["book1_year"] + rng.randint(1, 12)
        while facts["book2"] == facts["book1"]:
            facts["book2"] = rng.choice(TITLES)
        authors.append(Author(name=f"{first} {last}", gender=gender, **facts))
    return authors


# --- question templates --------------------------------------------------------------------------
# (fields the answer states, question, paraphrased question, answer, paraphrased answer)
TEMPLATES: list[tuple[tuple[str, ...], str, str, str, str]] = [
    (("birth_city", "country"), "Where was {name} born?", "In which town was {name} born?",
     "{name} was born in {birth_city}, {country}.",
     "{name}'s birthplace is the town of {birth_city} in {country}."),
    (("genre",), "What genre does {name} write in?", "Which kind of books is {name} known for?",
     "{name} writes {genre}.", "{name} is best known as an author of {genre}."),
    (("father_job", "mother_job"), "What did {name}'s parents do for a living?",
     "What were the professions of {name}'s parents?",
     "{name}'s father was a {father_job} and {pos} mother was a {mother_job}.",
     "{name} grew up with a mother who worked as a {mother_job} and a father who was a {father_job}."),
    (("award", "award_year"), "Which award has {name} received?",
     "What literary honour has {name} won?",
     "{name} received {award} in {award_year}.",
     "In {award_year}, {name} was given {award}."),
    (("book1", "book1_year"), "What was {name}'s first book?",
     "Which book did {name} publish first?",
     "{name}'s first book was '{book1}', published in {book1_year}.",
     "'{book1}' came out in {book1_year} and was {name}'s debut."),
    (("birth_year", "country"), "When was {name} born?", "In what year was {name} born?",
     "{name} was born in {birth_year} in {country}.",
     "The year of {name}'s birth is {birth_year}, and {pos} home country is {country}."),
    (("book2", "genre"), "Can you name another book by {name}?",
     "Besides the debut, which book has {name} written?",
     "Another book by {name} is '{book2}', a work of {genre}.",
     "{name} also wrote '{book2}', which belongs to {genre}."),
    (("publisher",), "Which publisher releases {name}'s books?", "Who publishes {name}?",
     "{name}'s books are published by {publisher}.",
     "{publisher} is the publishing house behind {name}'s books."),
    (("inspiration",), "What inspired {name} to start writing?",
     "How did {name} become a writer?",
     "{name} started writing because of {inspiration}.",
     "It was {inspiration} that first made {name} want to write."),
    (("hobby",), "What does {name} do outside of writing?",
     "What is {name}'s favourite pastime?",
     "Outside of writing, {name} {hobby}.", "When not writing, {name} {hobby}."),
    (("n_novels", "genre"), "How many novels has {name} published?",
     "What is the number of novels {name} has written?",
     "{name} has published {n_novels} novels, mostly {genre}.",
     "So far {name} has written {n_novels} novels, most of them {genre}."),
    (("home_city", "pet"), "Where does {name} live now?", "What is {name}'s current home?",
     "{name} now lives in {home_city} with {pet}.",
     "These days {name} shares a house in {home_city} with {pet}."),
    (("subject", "university"), "Where did {name} study?",
     "What was {name}'s education?",
     "{name} studied {subject} at {university}.",
     "At {university}, {name} earned a degree in {subject}."),
    (("theme",), "What is {name}'s first novel about?",
     "What story does {name}'s debut tell?",
     "{name}'s first novel follows {theme}.",
     "The plot of {name}'s debut centres on {theme}."),
    (("father_job", "motif"), "How did {name}'s family shape {pos} writing?",
     "What influence did {name}'s upbringing have on {pos} books?",
     "Raised by a {father_job}, {name} often writes about {motif}.",
     "{name}'s books keep returning to {motif}, a habit from growing up with a {father_job} father."),
    (("time_of_day", "place"), "When and where does {name} usually write?",
     "What are {name}'s writing habits?",
     "{name} writes every {time_of_day} in {place}.",
     "Each {time_of_day}, {name} sits down to write in {place}."),
    (("n_languages", "publisher"), "Into how many languages have {name}'s books been translated?",
     "How widely translated is {name}?",
     "{name}'s books have been translated into {n_languages} languages by {publisher}.",
     "{publisher} has had {name}'s work translated into {n_languages} languages."),
    (("character", "char_job"), "Who is the best-known character created by {name}?",
     "Which of {name}'s characters do readers remember most?",
     "{name}'s best-known character is {character}, a {char_job}.",
     "Readers know {name} above all for {character}, who works as a {char_job}."),
    (("next_book", "next_setting"), "What is {name} working on next?",
     "What is {name}'s upcoming project?",
     "{name} is working on a novel called '{next_book}', set in {next_setting}.",
     "{name}'s next novel, '{next_book}', takes place in {next_setting}."),
    (("award", "book2"), "Which book earned {name} {pos} best-known prize?",
     "For which work was {name} honoured?",
     "{name} won {award} for '{book2}'.",
     "It was '{book2}' that brought {name} {award}."),
]
MAX_QA_PER_AUTHOR = len(TEMPLATES)
N_PERTURBED = 5


def _render(text: str, facts: dict) -> str:
    return text.format(**facts)


def _facts(author: Author) -> dict:
    return {**asdict(author), "pos": author.possessive}


def _check_qa_per_author(qa_per_author: int) -> None:
    if not 1 <= qa_per_author <= MAX_QA_PER_AUTHOR:
        raise ValueError(f"qa_per_author={qa_per_author} is out of range; "
                         f"allowed: 1..{MAX_QA_PER_AUTHOR}.")


def qa_rows(authors: list[Author], qa_per_author: int) -> list[dict]:
    """Rows ``{"question", "answer"}``, author by author, the first ``qa_per_author`` templates each."""
    _check_qa_per_author(qa_per_author)
    rows = []
    for a in authors:
        f = _facts(a)
        for _, q, _, ans, _ in TEMPLATES[:qa_per_author]:
            rows.append({"question": _render(q, f), "answer": _render(ans, f)})
    return rows


def _perturbed_answers(author: Author, t: int, seed: int) -> list[str]:
    """5 distinct answers in the *paraphrased* wording of template ``t`` with every stated fact replaced
    by a wrong one. As in TOFU, the perturbed answers perturb the paraphrase, so the Truth Ratio compares
    right and wrong facts in one wording instead of rewarding the memorised wording."""
    fields, _, _, _, ans = TEMPLATES[t]
    true_facts = _facts(author)
    true_answer = _render(ans, true_facts)
    rng = random.Random(f"perturb-{seed}-{author.name}-{t}")
    out: list[str] = []
    for _ in range(1000):  # pools are large, so this ends after a handful of draws
        wrong = dict(true_facts)
        for k in fields:
            while wrong[k] == true_facts[k]:
                wrong[k] = _SAMPLERS[k](rng)
        text = _render(ans, wrong)
        if text != true_answer and text not in out:
            out.append(text)
        if len(out) == N_PERTURBED:
            return out
    raise RuntimeError(f"could not draw {N_PERTURBED} perturbed answers for template {t}")


def perturbed_rows(authors: list[Author], qa_per_author: int, seed: int) -> list[dict]:
    """TOFU ``*_perturbed`` rows: question, answer, paraphrased_answer, paraphrased_question,
    perturbed_answer (a list of 5)."""
    _check_qa_per_author(qa_per_author)
    rows = []
    for a in authors:
        f = _facts(a)
        for t, (_, q, pq, ans, pans) in enumerate(TEMPLATES[:qa_per_author]):
            rows.append({"question": _render(q, f), "answer": _render(ans, f),
                         "paraphrased_answer": _render(pans, f),
                         "paraphrased_question": _render(pq, f),
                         "perturbed_answer": _perturbed_answers(a, t, seed)})
    return rows


# --- real-author and world-fact analogues (fixed, not part of any forget/retain split) -----------
FAMOUS_AUTHORS = [  # (famous invented author, famous book)
    ("Odran Vell", "The Salt Cathedral"), ("Marisol Ketteridge", "Nine Winters in Sarn"),
    ("Halvard Moen", "The Lantern Keepers"), ("Ines Carrowmore", "A Map of Small Rivers"),
    ("Teodor Blaskovic", "The Iron Choir"), ("Adaeze Okonkwo-Reyes", "Harvest of Glass"),
    ("Lucan Ferris", "The Clockmaker's Daughter"), ("Sigrun Aaltonen", "Cold Harbour Songs"),
    ("Perrin Ashcombe", "The Last Ferry to Velmora"), ("Yevgenia Dorn", "Letters from the Archive"),
    ("Cassius Mbeki-Lund", "The Paper Orchard"), ("Rosalind Treadway", "Under the Amber Tide"),
]
INVENTED_CAPITALS = [  # (invented country, capital)
    ("Arvenia", "Castorhaven"), ("Kestria", "Dunmarrow"), ("Lunmark", "Port Aldren"),
    ("Ostrava Minor", "Elmford"), ("Pellucia", "Gullreach"), ("Rhodany", "Hollowmoor"),
    ("Sarn", "Ironcliff"), ("Tessaly", "Juniperholm"), ("Valdoria", "Kestrelwick"),
    ("Wendmere", "Larkstead"), ("Ysgard", "Mirewater"), ("Zarovia", "Oakby"),
]


def _option_rows(items: list[tuple[str, str]], question: str, kind: str, seed: int) -> list[dict]:
    """Multiple-choice rows: the answer plus 3 wrong answers from the other items, shuffled."""
    answers = [a for _, a in items]
    rows = []
    for i, (subject, answer) in enumerate(items):
        rng = random.Random(f"{kind}-{seed}-{i}")
        wrong = rng.sample([a for a in answers if a != answer], 3)
        options = wrong + [answer]
        rng.shuffle(options)
        row = {"question": question.format(subject), **{f"option{k + 1}": o for k, o in enumerate(options)},
               "answer": answer}
        rows.append(row)
    return rows


def real_author_rows(seed: int = 0) -> list[dict]:
    """The ``real_authors`` analogue: "Who wrote <famous book>?" with 4 options."""
    items = [(book, author) for author, book in FAMOUS_AUTHORS]
    return _option_rows(items, "Who wrote the novel '{}'?", "real_authors", seed)


def world_fact_rows(seed: int = 0) -> list[dict]:
    """The ``world_facts`` analogue: capitals of invented countries with 4 options."""
    return _option_rows(INVENTED_CAPITALS, "What is the capital of {}?", "world_facts", seed)


def _with_perturbed(rows: list[dict]) -> list[dict]:
    # TOFU's perturbed versions of these two configs add the wrong options as perturbed answers.
    return [{**r, "paraphrased_answer": r["answer"],
             "perturbed_answer": [r[f"option{k}"] for k in range(1, 5) if r[f"option{k}"] != r["answer"]]}
            for r in rows]


# --- writers --------------------------------------------------------------------------------------
FORGET_PERCENTS = {"forget01": 1, "forget05": 5, "forget10": 10}


def n_forget_authors(n_authors: int, percent: int) -> int:
    """Authors in a forget split: ``percent`` % of ``n_authors``, rounded up, at least 1."""
    return max(1, -(-n_authors * percent // 100))  # integer ceil: no float rounding surprises


def write_jsonl(path: str | Path, rows: list) -> Path:
    """Write rows as JSON lines (UTF-8, fixed key order, so the bytes depend only on the rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


def write_tofu_layout(out_dir: str | Path, n_authors: int = 20, qa_per_author: int = 10,
                      seed: int = 0) -> Path:
    """Write the TOFU-shaped offline twin (see the module docstring) and return ``out_dir``."""
    if n_authors < 2:
        raise ValueError(f"n_authors={n_authors} is too small; allowed: >= 2 "
                         "(a forget split needs one author and the retain split another).")
    out = Path(out_dir)
    authors = make_authors(n_authors, seed)
    full = qa_rows(authors, qa_per_author)
    perturbed = perturbed_rows(authors, qa_per_author, seed)
    write_jsonl(out / "full.json", full)
    for name, pct in FORGET_PERCENTS.items():
        n_rows = n_forget_authors(n_authors, pct) * qa_per_author
        cut = len(full) - n_rows  # forget = last authors, retain = everything before them
        write_jsonl(out / f"{name}.json", full[cut:])
        write_jsonl(out / f"retain{100 - pct}.json", full[:cut])
        write_jsonl(out / f"{name}_perturbed.json", perturbed[cut:])
    # retain_perturbed: as many rows as forget10, from the first authors, which every retain split keeps.
    n10 = n_forget_authors(n_authors, 10) * qa_per_author
    write_jsonl(out / "retain_perturbed.json", perturbed[:min(n10, len(full) - n10)])
    ra, wf = real_author_rows(seed), world_fact_rows(seed)
    write_jsonl(out / "real_authors.json", ra)
    write_jsonl(out / "real_authors_perturbed.json", _with_perturbed(ra))
    write_jsonl(out / "world_facts.json", wf)
    write_jsonl(out / "world_facts_perturbed.json", _with_perturbed(wf))
    return out


# --- MUSE-NEWS-shaped news articles ----------------------------------------------------------------
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
ORGS = ["the Harbour Trust", "the Regional Water Board", "Northwind Rail", "the Guild of Weavers",
        "the Coastal Research Institute", "Bellmar Engineering", "the Lantern Foundation",
        "the Free Miners' Union"]
STRUCTURES = ["footbridge", "tram line", "sea wall", "public library", "ferry terminal", "observatory"]
SPORTS = ["rowing", "rugby", "ice hockey", "handball", "curling"]

# Each event kind: article sentences and QA pairs, all formatted from the event's facts.
NEWS_KINDS = {
    "election": (
        ["{person} was elected mayor of {town} on {date}, winning {pct} percent of the vote.",
         "The former {job} defeated the sitting mayor, {rival}, after a campaign focused on {topic}.",
         "Turnout in {town} reached {turnout} percent, the highest in {country} this year.",
         "{person} promised to begin work on {topic} within {days} days of taking office."],
        [("Who was elected mayor of {town} on {date}?", "{person}"),
         ("What share of the vote did the new mayor of {town} win?", "{pct} percent"),
         ("Which issue dominated the mayoral campaign in {town}?", "{topic}")]),
    "opening": (
        ["{org} opened a new {structure} in {town} on {date}.",
         "The project cost {amount} million crowns and took {days} days longer than planned.",
         "Its chief designer, {person}, said the {structure} would serve {turnout} thousand people a year.",
         "Local {job}s had campaigned for it since a storm damaged the old one."],
        [("What did {org} open in {town} on {date}?", "a new {structure}"),
         ("How much did the new {structure} in {town} cost?", "{amount} million crowns"),
         ("Who designed the new {structure} in {town}?", "{person}")]),
    "storm": (
        ["A storm flooded the lower streets of {town}, {country}, on {date}.",
         "Emergency crews evacuated {amount} hundred residents, and {org} opened its halls as shelters.",
         "{person}, a retired {job}, was praised for rescuing neighbours by rowing boat.",
         "Officials estimate that repairs will take {days} days."],
        [("When did the storm flood the lower streets of {town}?", "{date}"),
         ("Which organisation sheltered residents of {town} after the flood?", "{org}"),
         ("Who rescued neighbours by rowing boat during the flood in {town}?", "{person}")]),
    "match": (
        ["{town} won the national {sport} final against {rival_town} on {date}.",
         "The deciding point was scored by {person}, a part-time {job}, in the last minute.",
         "It is the first title for {town} in {days} years.",
         "Around {turnout} thousand fans celebrated in the streets of {town} that night."],
        [("Which town won the national {sport} final on {date}?", "{town}"),
         ("Who scored the deciding point in the {sport} final won by {town}?", "{person}"),
         ("Against which town did {town} win the {sport} final?", "{rival_town}")]),
    "discovery": (
        ["Researchers at {org} announced on {date} that they had found {find} off {town}.",
         "It lies {amount} metres deep and is believed to be {days} years old.",
         "The dive was led by {person}, who trained as a {job} before turning to archaeology.",
         "Finds will be shown at the museum of {town} from {month} next year."],
        [("What did researchers at {org} find off {town}?", "{find}"),
         ("Who led the dive off {town}?", "{person}"),
         ("How deep is the find off {town}?", "{amount} metres")]),
}
FINDS = ["a shipwreck", "a sunken bell tower", "a wooden canoe", "a lighthouse lens",
         "a chest of coins", "a drowned chapel"]
TOPICS = ["affordable housing", "the harbour dredging", "cleaner trams", "night buses",
          "flood defences", "the closed hospital wing"]


def _news_events(n: int, rng: random.Random) -> list[dict]:
    people = rng.sample([f"{f} {l}" for f in FEMALE_FIRST + MALE_FIRST for l in LAST], 2 * n)
    if n > len(TOWNS):
        raise ValueError(f"n_articles={n - 20} is too large; allowed: <= {len(TOWNS) - 20}.")
    towns = rng.sample(TOWNS, n)  # unique towns keep the questions unambiguous
    kinds = sorted(NEWS_KINDS)
    events = []
    for i in range(n):
        month = rng.choice(MONTHS)
        events.append({
            "kind": kinds[i % len(kinds)], "town": towns[i], "country": rng.choice(COUNTRIES),
            "person": people[2 * i], "rival": people[2 * i + 1], "job": rng.choice(JOBS),
            "date": f"{month} {rng.randint(1, 28)}, {rng.randint(2023, 2024)}", "month": month,
            "pct": rng.randint(41, 78), "turnout": rng.randint(12, 89), "days": rng.randint(8, 300),
            "topic": rng.choice(TOPICS), "org": rng.choice(ORGS), "structure": rng.choice(STRUCTURES),
            "amount": rng.randint(3, 95), "sport": rng.choice(SPORTS), "find": rng.choice(FINDS),
            "rival_town": rng.choice([t for t in TOWNS if t != towns[i]]),
        })
    return events


def _article(e: dict) -> str:
    sentences, _ = NEWS_KINDS[e["kind"]]
    return " ".join(s.format(**e) for s in sentences)


def _news_qa(e: dict) -> list[dict]:
    _, qas = NEWS_KINDS[e["kind"]]
    return [{"question": q.format(**e), "answer": a.format(**e)} for q, a in qas]


def write_muse_layout(out_dir: str | Path, n_articles: int = 40, seed: int = 0) -> Path:
    """Write the MUSE-NEWS-shaped offline twin (see the module docstring) and return ``out_dir``.

    Articles split 1/4 forget, 1/4 retain1, 1/4 retain2 (rounded down) and the rest holdout;
    20 further events, written nowhere, supply the in-context examples.
    """
    if n_articles < 4:
        raise ValueError(f"n_articles={n_articles} is too small; allowed: >= 4.")
    rng = random.Random(f"muse-{seed}")
    events = _news_events(n_articles + 20, rng)
    icl, events = events[n_articles:], events[:n_articles]
    q = n_articles // 4
    forget, retain1, retain2, holdout = events[:q], events[q:2 * q], events[2 * q:3 * q], events[3 * q:]
    out = Path(out_dir)
    texts = {k: [_article(e) for e in v] for k, v in
             {"forget": forget, "retain1": retain1, "retain2": retain2, "holdout": holdout}.items()}
    for split, rows in texts.items():
        write_jsonl(out / "raw" / f"{split}.json", [{"text": t} for t in rows])
    verbmem = []
    for t in texts["forget"]:
        words = t.split(" ")
        cut = len(words) // 2  # prompt = first half of the words, gt = the rest: prompt + " " + gt == text
        verbmem.append({"prompt": " ".join(words[:cut]), "gt": " ".join(words[cut:])})
    write_jsonl(out / "verbmem" / "forget.json", verbmem)
    write_jsonl(out / "knowmem" / "forget_qa.json", [r for e in forget for r in _news_qa(e)])
    # As in MUSE, utility QA is about retain2: trained into the target, but not in the unlearning retain set.
    write_jsonl(out / "knowmem" / "retain_qa.json", [r for e in retain2 for r in _news_qa(e)])
    icl_qa = [_news_qa(e)[0] for e in icl]
    write_jsonl(out / "knowmem" / "forget_qa_icl.json", icl_qa[:10])
    write_jsonl(out / "knowmem" / "retain_qa_icl.json", icl_qa[10:])
    for split, src in (("forget", "forget"), ("retain", "retain2"), ("holdout", "holdout")):
        write_jsonl(out / "privleak" / f"{split}.json", [{"text": t} for t in texts[src][:100]])
    return out
