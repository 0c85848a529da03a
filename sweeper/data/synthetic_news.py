"""The offline, deterministic twin of MUSE-NEWS: invented news events, articles and QA about them.

    from sweeper.data.synthetic_news import write_muse_layout
    write_muse_layout("data/muse", n_articles=40, seed=0)                    # ~55-word articles
    write_muse_layout("data/muse_real", n_articles=40, seed=0, lengths="real")  # ~300-2000 words

``lengths="short"`` (the default) writes each article as 4 sentences of facts; its output never
changes. ``lengths="real"`` keeps those 4 sentences as the lead paragraph and adds paragraphs of
event details, residents' quotes, street scenes, background and next steps (``synthetic_long_news``),
so articles have news lengths (MUSE-NEWS articles run to hundreds or thousands of words): ~300 to
~2000 words, median ~750. The events, so the knowmem QA files, are the same in both modes.

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

import random
from pathlib import Path

from sweeper.data.synthetic_common import (COUNTRIES, FEMALE_FIRST, JOBS, LAST, MALE_FIRST, MONTHS, TOWNS,
                                           check_lengths, write_jsonl)
from sweeper.data.synthetic_long_news import article_targets, long_article

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


def write_muse_layout(out_dir: str | Path, n_articles: int = 40, seed: int = 0,
                      lengths: str = "short") -> Path:
    """Write the MUSE-NEWS-shaped offline twin (see the module docstring) and return ``out_dir``.

    Articles split 1/4 forget, 1/4 retain1, 1/4 retain2 (rounded down) and the rest holdout;
    20 further events, written nowhere, supply the in-context examples.
    """
    check_lengths(lengths)
    if n_articles < 4:
        raise ValueError(f"n_articles={n_articles} is too small; allowed: >= 4.")
    rng = random.Random(f"muse-{seed}")
    events = _news_events(n_articles + 20, rng)
    icl, events = events[n_articles:], events[:n_articles]
    if lengths == "real":  # the events are drawn as for "short": the facts and QA are the same
        articles = [long_article(_article(e), e, words, seed, i) for i, (e, words) in
                    enumerate(zip(events, article_targets(n_articles, seed)))]
    else:
        articles = [_article(e) for e in events]
    q = n_articles // 4
    out = Path(out_dir)
    forget, retain2 = events[:q], events[2 * q:3 * q]
    texts = {"forget": articles[:q], "retain1": articles[q:2 * q], "retain2": articles[2 * q:3 * q],
             "holdout": articles[3 * q:]}
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
