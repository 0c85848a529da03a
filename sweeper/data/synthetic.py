"""Offline, deterministic twins of TOFU and MUSE-NEWS, generated from one seed.

Everything here is invented (people, towns, countries, awards, books, events), so a model can only
answer by memorising the training rows: every answer carries facts that the question does not.

    from sweeper.data.synthetic import make_authors, qa_rows, write_tofu_layout, write_muse_layout
    authors = make_authors(20, seed=0)
    rows = qa_rows(authors, qa_per_author=10)   # [{"question": ..., "answer": ...}, ...]
    write_tofu_layout("data/tofu", n_authors=20, qa_per_author=10, seed=0)
    write_tofu_layout("data/tofu_real", n_authors=20, qa_per_author=20, seed=0, lengths="real")
    write_muse_layout("data/muse", n_articles=40, seed=0)   # see sweeper.data.synthetic_news

``lengths`` (one of LENGTHS): "short" (the default) writes compact rows, answers of about 10 words;
"real" elaborates them to the real benchmarks' lengths (``synthetic_long_qa``, ``synthetic_long_news``).
"short" output never changes: cached targets are keyed by the files' contents.

This module holds the authors and the TOFU layout; the MUSE-NEWS layout lives in ``synthetic_news``
and the shared value pools in ``synthetic_common``. Every name stays importable from here.

TOFU layout (as in the ``locuslab/TOFU`` hub repo: one ``<config>.json`` file per config, JSON lines)::

    full.json                       all rows, author by author (question, answer)
    forget01/05/10.json             the LAST 1/5/10 % of authors' rows of full.json
    retain99/95/90.json             the FIRST rows of full.json: everything but the matching forget split
    forget01/05/10_perturbed.json   the forget rows plus paraphrased_question, paraphrased_answer and
                                    perturbed_answer (5 answers: same template, wrong facts)
    retain_perturbed.json           the same columns for the first rows of retain90 (as many as forget10)
    holdout01/05/10.json            as many rows as forget01/05/10, about authors no split trains on
                                    (``make_holdout_authors``): membership inference's never-seen side
    real_authors(_perturbed).json   fixed "famous authors" questions with option1..option4 (+ perturbed)
    world_facts(_perturbed).json    fixed facts about invented countries, same columns

Forget percentages are of authors, rounded up, so even a tiny set forgets at least one author.
``real_authors`` and ``world_facts`` perturbed rows carry 3 wrong answers (the wrong options), as TOFU's.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeper.data.synthetic_common import (  # noqa: F401  (pools re-exported for old imports)
    AWARDS, CHAR_FIRST, COUNTRIES, FEMALE_FIRST, GENRES, HOBBIES, INSPIRATIONS, JOBS, LAST, LENGTHS,
    MALE_FIRST, MOTIFS, PETS, PLACES, PUBLISHERS, SUBJECTS, THEMES, TIMES, TITLE_ADJ, TITLE_NOUN, TITLES,
    TOWN_HEAD, TOWN_TAIL, TOWNS, UNIVERSITIES, check_lengths, write_jsonl)
from sweeper.data.synthetic_long_qa import elaborate, join
from sweeper.data.synthetic_news import (  # noqa: F401  (the MUSE-NEWS twin, re-exported for old imports)
    FINDS, MONTHS, NEWS_KINDS, ORGS, SPORTS, STRUCTURES, TOPICS, _article, _news_events, _news_qa,
    write_muse_layout)

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
    pairs = _name_pairs()
    if not 1 <= n_authors <= len(pairs):
        raise ValueError(f"n_authors={n_authors} is out of range; allowed: 1..{len(pairs)}.")
    return _draw_authors(random.Random(f"authors-{seed}"), pairs, n_authors)


def make_holdout_authors(n_holdout: int, seed: int, taken: list[Author]) -> list[Author]:
    """``n_holdout`` more authors for the holdout sets, drawn like ``make_authors``'s from their own stream."""
    used = {a.name for a in taken}
    pool = [p for p in _name_pairs() if f"{p[0]} {p[1]}" not in used]  # fewer when the names run out
    return _draw_authors(random.Random(f"holdout-authors-{seed}"), pool, min(n_holdout, len(pool)))


def _name_pairs() -> list[tuple[str, str, str]]:  # (first, last, gender)
    return [(f, l, "female") for f in FEMALE_FIRST for l in LAST] + [(f, l, "male") for f in MALE_FIRST for l in LAST]


def _draw_authors(rng: random.Random, pairs: list, n_authors: int) -> list[Author]:
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


def _row(author: Author, t: int, seed: int, lengths: str) -> dict:
    """The ``*_perturbed`` row of template ``t`` (``qa_rows`` keeps its question and answer).

    For "real" lengths the compact texts get the elaboration of ``synthetic_long_qa``; the perturbed
    answers get the paraphrased answer's elaboration word for word: only the facts differ.
    """
    fields, q, pq, ans, pans = TEMPLATES[t]
    f = _facts(author)
    row = {"question": _render(q, f), "answer": _render(ans, f), "paraphrased_answer": _render(pans, f),
           "paraphrased_question": _render(pq, f), "perturbed_answer": _perturbed_answers(author, t, seed)}
    if lengths == "real":
        e = elaborate(author, t, fields, seed, questions=(row["question"], row["paraphrased_question"]),
                      answers=(row["answer"],),
                      paraphrases=(row["paraphrased_answer"], *row["perturbed_answer"]))
        row = {"question": join(e.question, row["question"]), "answer": join(row["answer"], e.answer),
               "paraphrased_answer": join(row["paraphrased_answer"], e.paraphrased_answer),
               "paraphrased_question": join(e.paraphrased_question, row["paraphrased_question"]),
               "perturbed_answer": [join(p, e.paraphrased_answer) for p in row["perturbed_answer"]]}
    return row


def qa_rows(authors: list[Author], qa_per_author: int, seed: int = 0, lengths: str = "short") -> list[dict]:
    """Rows ``{"question", "answer"}``, author by author, the first ``qa_per_author`` templates each.

    ``seed`` only matters for ``lengths="real"`` (it keys the elaboration; pass the authors' seed).
    """
    if lengths == "short":  # fast path: no perturbed answers to draw
        _check_qa_per_author(qa_per_author)
        return [{"question": _render(q, f), "answer": _render(ans, f)}
                for f in map(_facts, authors) for _, q, _, ans, _ in TEMPLATES[:qa_per_author]]
    # The full rows, cut down: in "real" lengths an answer shares its length cap with the perturbed answers.
    return [{"question": r["question"], "answer": r["answer"]}
            for r in perturbed_rows(authors, qa_per_author, seed, lengths)]


def perturbed_rows(authors: list[Author], qa_per_author: int, seed: int, lengths: str = "short") -> list[dict]:
    """TOFU ``*_perturbed`` rows: question, answer, paraphrased_answer, paraphrased_question,
    perturbed_answer (a list of 5)."""
    _check_qa_per_author(qa_per_author)
    check_lengths(lengths)
    return [_row(a, t, seed, lengths) for a in authors for t in range(qa_per_author)]


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


def write_tofu_layout(out_dir: str | Path, n_authors: int = 20, qa_per_author: int = 10,
                      seed: int = 0, lengths: str = "short") -> Path:
    """Write the TOFU-shaped offline twin (see the module docstring) and return ``out_dir``.

    ``lengths="real"`` elaborates questions and answers to TOFU's lengths (answers ~25 words at the
    median, up to ~60); ``real_authors``/``world_facts`` rows are the same in both modes.
    """
    check_lengths(lengths)
    if n_authors < 2:
        raise ValueError(f"n_authors={n_authors} is too small; allowed: >= 2 "
                         "(a forget split needs one author and the retain split another).")
    out = Path(out_dir)
    authors = make_authors(n_authors, seed)
    full = qa_rows(authors, qa_per_author, seed, lengths)
    perturbed = perturbed_rows(authors, qa_per_author, seed, lengths)
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
    # holdout01/05/10: as many rows as the matching forget split, from authors no split trains on.
    holdout = qa_rows(make_holdout_authors(n_forget_authors(n_authors, 10), seed, authors), qa_per_author, seed,
                      lengths)
    for name, pct in FORGET_PERCENTS.items():
        write_jsonl(out / f"holdout{name[-2:]}.json", holdout[:n_forget_authors(n_authors, pct) * qa_per_author])
    ra, wf = real_author_rows(seed), world_fact_rows(seed)
    write_jsonl(out / "real_authors.json", ra)
    write_jsonl(out / "real_authors_perturbed.json", _with_perturbed(ra))
    write_jsonl(out / "world_facts.json", wf)
    write_jsonl(out / "world_facts_perturbed.json", _with_perturbed(wf))
    return out
