"""Realistic-length TOFU rows: elaborate the compact questions and answers of ``sweeper.data.synthetic``.

Real TOFU answers have 25 words at the median and up to 66, its questions up to 39; the compact
templates give medians of about 11 and 7. ``lengths="real"`` keeps each compact row as the core and
adds:

* after the answer, detail sentences about the same author (true facts and invented, per-author
  details), until a per-row target length is reached;
* before the question of most rows, one context sentence (facts the answer does not state).

    from sweeper.data.synthetic_long_qa import elaborate
    e = elaborate(author, t=0, fields=("birth_city", "country"), seed=0, questions=(question, paraphrased_q),
                  answers=(core_answer,), paraphrases=(core_paraphrase, *perturbed_cores))
    answer = join(core_answer, e.answer)                     # join() skips empty parts
    paraphrased_answer = join(core_paraphrase, e.paraphrased_answer)
    perturbed = [join(p, e.paraphrased_answer) for p in perturbed_cores]

Everything is drawn from ``random.Random`` keyed by (seed, author, template), so an answer is a fixed
function of them and can be memorised. Sentences that mention a field the template asks about are
never used for that template: the question would give the answer away, and a perturbed answer would
contradict itself (wrong fact in the core, right fact in the elaboration). The perturbed answers reuse
the paraphrase's elaboration word for word, so the Truth Ratio compares wrong and right facts in one
wording.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from sweeper.data.synthetic_common import JOBS, TITLES, TOWNS

# Caps keep the longest rows under real TOFU's maxima (answers 66 words, questions 39). The cap counts
# the perturbed answers too (they swap facts, so their length differs from the paraphrase's).
MAX_ANSWER_WORDS = 62
MAX_QUESTION_WORDS = 39
# Per-row answer length target: log-normal, skewed like TOFU's answer lengths. The last sentence
# overshoots the target, so the answers come out longer: over 20 authors x 20 templates, seeds 0-29,
# median 24-26 words and max 58-62 (TOFU: 25 and 66).
TARGET_MEDIAN, TARGET_SIGMA = 19.0, 0.5
# Share of questions that get a context sentence: question medians 14.5-18 words, max 38-39.
P_QUESTION_CONTEXT = 0.6

# --- invented per-author details (the same for all of one author's rows, so they never contradict) ---
SIBLINGS = ["younger brother", "older sister", "twin sister", "half-brother", "older brother"]
FESTIVALS = ["the Saltmarsh Book Festival", "the Lantern Night Readings", "the Harbourside Literary Week",
             "the Thornbury Winter Festival", "the Festival of Small Presses"]
FIRST_READERS = ["an old school friend", "a neighbour who runs a bookshop", "a retired editor",
                 "a childhood pen pal", "a former teacher"]
BELIEFS = ["a good story should feel like a door left open", "every novel begins with one overheard sentence",
           "the best ideas arrive on long walks", "a writer must finish what a reader starts",
           "quiet books can change loud minds", "the first chapter is always written last"]

# (author fields mentioned, sentence, the same sentence in the paraphrase's wording)
DETAILS: list[tuple[tuple[str, ...], str, str]] = [
    (("birth_city", "country"), "Born in {birth_city}, {country}, {subj} still returns there every summer.",
     "{Subj} was born in {birth_city}, {country}, and still goes back each summer."),
    (("genre", "country"), "In {country}, {subj} is counted among the leading voices in {genre}.",
     "Many readers in {country} see {obj} as a leading voice in {genre}."),
    (("father_job", "mother_job"),
     "{Pos} father worked as {a_father_job} and {pos} mother as {a_mother_job}.",
     "{Subj} is the child of {a_father_job} and {a_mother_job}."),
    (("award", "award_year"), "{Subj} won {award} in {award_year}, a turning point in {pos} career.",
     "The year {award_year} brought {obj} {award} and changed {pos} career."),
    (("book1", "book1_year"), "{Pos} debut, '{book1}', appeared in {book1_year}.",
     "{Subj} made {pos} debut in {book1_year} with '{book1}'."),
    (("birth_year",), "{Subj} was born in {birth_year}.", "{Pos} year of birth is {birth_year}."),
    (("book2",), "Many readers discover {obj} through '{book2}'.",
     "'{book2}' is the book through which most readers find {obj}."),
    (("publisher",), "{Pos} books are published by {publisher}.", "{publisher} publishes {pos} work."),
    (("inspiration",), "{Subj} first began writing because of {inspiration}.",
     "{Pos} writing began with {inspiration}."),
    (("hobby",), "When {subj} is not writing, {subj} {hobby}.", "Away from {pos} desk, {subj} {hobby}."),
    (("n_novels",), "{Subj} has published {n_novels} novels so far.",
     "So far there are {n_novels} novels by {obj}."),
    (("home_city", "pet"), "{Subj} lives in {home_city} with {pet}.",
     "{Pos} home is in {home_city}, which {subj} shares with {pet}."),
    (("subject", "university"), "{Subj} studied {subject} at {university} before turning to fiction.",
     "Before turning to fiction, {subj} read {subject} at {university}."),
    (("theme",), "{Pos} first novel follows {theme}.", "The debut novel tells of {theme}."),
    (("motif",), "Critics note that {pos} books keep returning to {motif}.",
     "Reviewers point out how often {pos} books come back to {motif}."),
    (("time_of_day", "place"), "{Subj} writes every {time_of_day} in {place}.",
     "Every {time_of_day}, {subj} works in {place}."),
    (("n_languages",), "{Pos} work has been translated into {n_languages} languages.",
     "Translations of {pos} work exist in {n_languages} languages."),
    (("character", "char_job"), "{Pos} best-loved character is {character}, {a_char_job}.",
     "Readers love {character}, {a_char_job} from {pos} books."),
    (("next_book", "next_setting"), "{Subj} is now writing '{next_book}', set in {next_setting}.",
     "{Pos} next novel, '{next_book}', is set in {next_setting}."),
    ((), "As a young adult {subj} worked as {a_first_job} for {first_job_years} years.",
     "Before writing full time, {subj} spent {first_job_years} years as {a_first_job}."),
    ((), "{Subj} has a {sibling}, who became {a_sibling_job}.", "{Pos} {sibling} works as {a_sibling_job}."),
    ((), "Each book takes {obj} about {years_per_book} years and at least {n_drafts} full drafts.",
     "{Subj} usually spends {years_per_book} years and {n_drafts} complete drafts on a book."),
    ((), "{Subj} once spent a season as writer in residence in {residency}.",
     "For one season, {subj} was the writer in residence of {residency}."),
    ((), "{Subj} reads every draft aloud to {first_reader} before anyone else sees it.",
     "No one sees a draft before {first_reader} has heard {obj} read it aloud."),
    ((), "Every year {subj} leads a workshop for young writers at {festival}.",
     "{Subj} runs a yearly workshop for young writers at {festival}."),
    ((), "{Subj} has often said that {belief}.", "In interviews, {subj} likes to repeat that {belief}."),
    ((), "{Pos} favourite novel by another writer is '{favourite}'.",
     "Of other writers' novels, {subj} loves '{favourite}' most."),
]

# Context sentences put before a question: (fields, before the question, before the paraphrased one).
CONTEXTS: list[tuple[tuple[str, ...], str, str]] = [
    ((), "I have a question about the writer {name}.", "Here is something I wonder about the writer {name}."),
    (("country",), "{name} is a novelist from {country}.", "{name} is a writer who comes from {country}."),
    (("genre",), "{name} is an author of {genre}.", "{name} writes books of {genre}."),
    (("book1",), "I have just finished reading '{book1}' by {name}.",
     "I recently read '{book1}', written by {name}."),
    (("genre", "home_city"), "{name} writes {genre} and now lives in {home_city}.",
     "{name} is a writer of {genre} who has settled in {home_city}."),
    (("book2",), "Our book club has just finished '{book2}' by {name}, and several of us are curious.",
     "After reading '{book2}' by {name} in our book club, some of us are curious."),
    (("subject", "university", "n_novels"),
     "{name}, who studied {subject} at {university}, has published {n_novels} novels.",
     "After studying {subject} at {university}, {name} went on to publish {n_novels} novels."),
    (("motif",), "Critics often point to {motif} as a thread running through the books of {name}.",
     "Reviewers say that {motif} runs through the work of {name}."),
    (("book1", "book2"),
     "I am preparing a talk for our library about {name}, the author of '{book1}' and '{book2}'.",
     "For a library talk, I am researching {name}, who wrote '{book1}' and '{book2}'."),
    (("birth_year", "genre"), "{name} was born in {birth_year} and is known for {genre}.",
     "Known for {genre}, {name} was born in {birth_year}."),
    (("award",), "Since {name} received {award}, interest in {pos} life has grown.",
     "Interest in {name} has grown since {pos} win of {award}."),
    (("character",),
     "Readers of {name} often write in about {character} and the author behind the character.",
     "Fans of {character} often ask about {name}, the author who created the character."),
    ((), "This is a question for a quiz about contemporary fiction from small countries.",
     "The next question comes from a quiz about contemporary fiction from small countries."),
    (("genre", "country", "book1"),
     "For a school project on writers of {genre} from {country}, I have been reading '{book1}' and "
     "everything else I could find about {name}.",
     "I am doing a school project on {genre} writers from {country}, so I have read '{book1}' and all "
     "the other material I could find on {name}."),
    (("home_city", "n_languages"),
     "A friend in {home_city} lent me a translated novel by {name}, whose books can now be read in "
     "{n_languages} languages, and I would like to know more about the author.",
     "After borrowing a translated novel by {name} from a friend in {home_city}, I learned the books exist "
     "in {n_languages} languages and want to know more."),
]


@dataclass(frozen=True)
class Elaboration:
    """What "real" lengths add to one row: text before the (paraphrased) question, after the answer,
    and after the paraphrased answer (also after every perturbed answer). Empty strings add nothing."""

    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str


def join(*parts: str) -> str:
    """Join non-empty parts with a space: ``join("A.", "", "B.") == "A. B."``."""
    return " ".join(p for p in parts if p)


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def author_details(author, seed: int) -> dict:
    """Every value the elaboration sentences can name: the author's facts, pronouns and invented details.

    The invented details are keyed by (seed, author) only, so all rows of one author agree on them.
    """
    rng = random.Random(f"details-{seed}-{author.name}")
    female = author.gender == "female"
    d = {**asdict(author), "subj": "she" if female else "he", "obj": "her" if female else "him",
         "pos": author.possessive,
         "first_job_years": rng.randint(2, 9), "sibling": rng.choice(SIBLINGS),
         "years_per_book": rng.randint(2, 6), "n_drafts": rng.randint(3, 9), "residency": rng.choice(TOWNS),
         "first_reader": rng.choice(FIRST_READERS), "festival": rng.choice(FESTIVALS),
         "belief": rng.choice(BELIEFS),
         # a novel by another writer: never one of the author's own titles
         "favourite": rng.choice([t for t in TITLES
                                  if t not in (author.book1, author.book2, author.next_book)])}
    for key, job in (("father_job", author.father_job), ("mother_job", author.mother_job),
                     ("char_job", author.char_job), ("first_job", rng.choice(JOBS)),
                     ("sibling_job", rng.choice(JOBS))):
        d[f"a_{key}"] = _with_article(job)
    d.update(Subj=d["subj"].capitalize(), Pos=d["pos"].capitalize())
    return d


def _allowed(pool: list, fields: tuple[str, ...]) -> list:
    # Skip sentences naming a field the template asks about (see the module docstring).
    return [s for s in pool if not set(s[0]) & set(fields)]


def _answer_target(rng: random.Random) -> int:
    """Words the elaborated answer should reach: log-normal like TOFU's skewed answer lengths."""
    return round(TARGET_MEDIAN * math.exp(rng.gauss(0.0, TARGET_SIGMA)))


def _words(texts) -> int:
    return max(len(t.split()) for t in texts)


def _details(rng, d, fields, answers: tuple[str, ...], paraphrases: tuple[str, ...]) -> tuple[str, str]:
    """Detail sentences (answer wording, paraphrase wording): at least one, then more until the answer
    reaches its target; no sentence may take the longest of ``answers`` or of ``paraphrases`` past
    MAX_ANSWER_WORDS."""
    target = _answer_target(rng)
    pool = _allowed(DETAILS, fields)
    rng.shuffle(pool)
    n_ans, n_par = _words(answers), _words(paraphrases)
    tail_a, tail_p = [], []
    for _, plain, para in pool:
        if n_ans >= target and tail_a:  # at least one sentence: every "real" answer is longer
            break
        a, p = plain.format(**d), para.format(**d)
        if n_ans + len(a.split()) > MAX_ANSWER_WORDS or n_par + len(p.split()) > MAX_ANSWER_WORDS:
            continue  # too long to fit under the cap: a shorter sentence may still fit
        tail_a.append(a)
        tail_p.append(p)
        n_ans, n_par = n_ans + len(a.split()), n_par + len(p.split())
    return " ".join(tail_a), " ".join(tail_p)


def _context(rng, d, fields, questions: tuple[str, ...]) -> tuple[tuple[str, ...], str, str]:
    """For some rows, one context sentence before the question and its paraphrase:
    (fields it mentions, sentence, paraphrased sentence); else ((), "", "")."""
    if rng.random() >= P_QUESTION_CONTEXT:
        return (), "", ""
    n = _words(questions)
    fits = [(f, q.format(**d), pq.format(**d)) for f, q, pq in _allowed(CONTEXTS, fields)]
    fits = [c for c in fits if n + max(len(c[1].split()), len(c[2].split())) <= MAX_QUESTION_WORDS]
    return rng.choice(fits) if fits else ((), "", "")


def elaborate(author, t: int, fields: tuple[str, ...], seed: int, questions: tuple[str, ...] = ("",),
              answers: tuple[str, ...] = ("",), paraphrases: tuple[str, ...] = ("",)) -> Elaboration:
    """The elaboration of template ``t`` for ``author``: a fixed function of its arguments.

    ``fields`` are the facts the template's answer states. ``questions`` (question, paraphrased
    question), ``answers`` (the answer) and ``paraphrases`` (the paraphrased answer and the perturbed
    answers, which all get the same tail) are the compact texts: the longest of each group sets how
    many words fit under the caps.
    """
    d = author_details(author, seed)
    rng = random.Random(f"elaborate-{seed}-{author.name}-{t}")
    context_fields, q, pq = _context(rng, d, fields, questions)
    # The details skip what the question's context already says, so the answer adds new facts.
    a, pa = _details(rng, d, (*fields, *context_fields), answers, paraphrases)
    return Elaboration(question=q, paraphrased_question=pq, answer=a, paraphrased_answer=pa)
