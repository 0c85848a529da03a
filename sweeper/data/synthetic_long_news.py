"""Realistic-length MUSE-NEWS articles: the compact article as the lead, then paragraphs of news filler.

MUSE-NEWS articles run to hundreds or thousands of words; the compact twin writes about 55. With
``lengths="real"``, ``write_muse_layout`` keeps the compact article as the lead paragraph (so every
knowmem answer is still stated in it) and appends paragraphs until a per-article target length:

    from sweeper.data.synthetic_long_news import article_targets, long_article
    targets = article_targets(40, seed=0)        # 40 word counts, ~300..~2000, median ~750
    text = long_article(lead, event, targets[0], seed=0, index=0)

Paragraphs are of five kinds: details of the event (from its facts), quotes from residents, street
scenes, background about the town, and next steps. Every value is drawn from ``random.Random`` keyed by
(seed, index), so an article is a fixed function of its event, target, seed and index. The filler never names
a new mayor, designer, rescuer, scorer or diver, and never restates a date or a number of the lead
differently, so the knowmem answers stay the only answers the article supports.
"""
from __future__ import annotations

import math
import random
from statistics import NormalDist

from sweeper.data.synthetic_common import JOBS, MONTHS, TOWNS

# Article lengths: log-normal around MEDIAN_WORDS, truncated to [MIN_WORDS, MAX_WORDS].
MIN_WORDS, MEDIAN_WORDS, MAX_WORDS, SIGMA = 300, 750, 2000, 0.6
PARAGRAPH = "\n\n"

# Residents quoted in the filler: names from pools disjoint from the event people (FEMALE_FIRST etc.).
RESIDENT_FIRST = {"she": ["Agnes", "Clemence", "Edda", "Gunnel", "Iona", "Katrin", "Magda", "Orla", "Runa",
                          "Tove", "Ulla"],
                  "he": ["Bertil", "Dag", "Folke", "Hamish", "Joris", "Leif", "Nils", "Piet", "Sten"]}
RESIDENT_LAST = ["Achterberg", "Bramley", "Crane", "Dahl", "Eckhart", "Fosse", "Gale", "Hask", "Innes",
                 "Juul", "Kerr", "Lusk", "Moberg", "Nyland", "Ormsby", "Pryce", "Rook", "Strand", "Tull"]
SHOPS = ["bakery", "hardware shop", "bookshop", "fishmonger's", "pharmacy", "café", "tailor's shop"]
VENUES = ["town hall", "old grain exchange", "library reading room", "community centre", "harbour office"]
AGENDAS = ["the budget for next year", "the state of the harbour road", "parking near the market",
           "the summer ferry timetable", "a new bus route to the hospital", "repairs to the school roof"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
INDUSTRIES = ["fishing", "boatbuilding", "salt making", "wool weaving", "stone quarrying", "glassmaking"]
ORIGINS = ["fishing village", "market town", "river crossing", "monastery settlement", "mining camp"]

# Quotes: any event kind, then kind by kind. Drawn without replacement until a pool runs out.
QUOTES = ["I have lived here all my life and I have never seen anything like it",
          "People will be talking about this for years", "We were all glued to the radio",
          "My grandmother would not have believed it", "It shows what a small town can do",
          "Everyone in the street came out to see", "We need more days like this, not fewer",
          "I only hope the council keeps its promises", "My children will remember this",
          "It has been a long time coming", "You could feel the whole town holding its breath",
          "I closed the shop early, nobody was buying anything anyway",
          "It is all anyone talked about at the market",
          "Some of us have waited thirty years for news like this",
          "I phoned my sister straight away", "We are a small place, but we look after each other",
          "I just hope people remember this in a year's time", "The young people here deserve some good news"]
KIND_QUOTES = {
    "election": ["I voted for change and I think we got it", "The old council stopped listening to us",
                 "Now the hard work starts", "I did not expect the result to be so clear",
                 "I will judge the new mayor on the first hundred days"],
    "opening": ["It is beautiful, and it was worth the wait", "My commute is twenty minutes shorter now",
                "The old one was falling apart", "I came for the ribbon and stayed all afternoon",
                "I hope they look after this one better"],
    "storm": ["The water came up faster than anyone expected", "We lost everything on the ground floor",
              "The neighbours were wonderful", "I have never been so frightened in my life",
              "We are still drying out the furniture"],
    "match": ["I cried when the final whistle went", "These players are our neighbours",
              "We sang until our voices went", "Nobody gave us a chance this season",
              "My son wants to start playing tomorrow"],
    "discovery": ["It makes you wonder what else is down there", "My father always said there was a wreck",
                  "The museum will need a bigger room", "It is a piece of our history coming home",
                  "I have fished over that spot for forty years"],
}
QUOTE_FRAMES = ['"{quote}," said {resident}, {a_rjob} who has lived in {town} for {years} years.',
                '{resident}, {age}, said: "{quote}."', '"{quote}," {resident} told this newspaper.',
                'Speaking outside the {venue}, {resident}, {a_rjob}, said: "{quote}."',
                '"{quote}," added {resident}, whose family has run a {shop} in {town} since {since}.',
                'For {resident}, {age}, the week felt personal. "{quote}," {pronoun} said.',
                '"{quote}," said {resident}, who moved to {town} from {other_town} in {moved}.']
# Scenes: street-level colour with fresh names and numbers on every draw (reusable, rarely repeated).
STREETS = ["Harbour Street", "Mill Lane", "Chapel Row", "Market Square", "Station Road", "Quay Street",
           "Ropewalk", "Bridge End"]
FOODS = ["soup", "hot tea and sandwiches", "fish pies", "apple cake", "bread from the bakery"]
SCENES = ["By {hour} o'clock, the queue outside the {shop} on {street} reached the corner.",
          "{resident}, who runs the {shop} on {street}, said business had been brisk all week.",
          "On {street}, neighbours put out tables and shared {food}.",
          "A petition started by {resident} on {street} has gathered {signatures} signatures.",
          "Volunteers led by {resident} handed out {food} at the {venue}.",
          "The local radio station said it received {signatures} messages from listeners within an hour.",
          "In {other_town}, too, people followed the news closely, said {resident}, a teacher there."]

# Details: sentences from the event's facts (used once each per article).
KIND_DETAILS = {
    "election": ["{person} spent {weeks} weeks knocking on doors in every district of {town}.",
                 "{rival} conceded shortly after midnight and congratulated {person}.",
                 "Counting took place in the {venue}, where {count} volunteers worked through the night.",
                 "Supporters of {person} gathered in the square to wait for the result."],
    "opening": ["Construction was delayed twice by the winter weather in {country}.",
                "{org} paid for most of the work with help from a national fund.",
                "Schoolchildren from {town} cut the ribbon at the ceremony.",
                "{person} said the design had been changed {small} times after talks with residents."],
    "storm": ["Wind speeds reached {speed} kilometres an hour at the harbour mouth.",
              "{org} said it had received more than {count} calls for help during the first night.",
              "Schools in {town} stayed closed for the rest of the week.",
              "Insurers in {country} have sent assessors to the worst-hit streets."],
    "match": ["The team trained through the winter in a borrowed hall in {neighbour}.",
              "Tickets for the final sold out in {small} minutes.",
              "{rival_town} had been favourites after an unbeaten season.",
              "Shops in {town} hung the team's colours in their windows all week."],
    "discovery": ["Divers from {org} spent {weeks} weeks mapping the site before they announced the find.",
                  "A fisherman from {town} first reported something unusual on the seabed.",
                  "Archaeologists from three universities in {country} will study the site.",
                  "The exact location is being kept secret to protect the site from treasure hunters."],
}
BACKGROUND = ["{town} has about {population} thousand inhabitants and lies {distance} kilometres from "
              "{neighbour}.",
              "The town began as a {origin} in {founded} and grew quickly after the railway arrived.",
              "Many families in {town} have worked in {industry} for generations.",
              "{town} and {neighbour} have shared a hospital and a secondary school for decades.",
              "Older residents still talk about the winter of {cold_year}, when the harbour froze for weeks.",
              "The population of {town} has fallen by {decline} percent since the decline of {industry}.",
              "Tourism has grown in recent years, and the town now has {hotels} small hotels.",
              "The last time {town} made national news was a ferry strike in {strike_year}."]
NEXT_STEPS = ["The council of {town} will meet on {weekday} to discuss {agenda}.",
              "{org} said it would publish a full report in {month2}.",
              "A public meeting is planned for {weekday2} evening at the {venue}.",
              "Officials said they would also review {agenda2} before the end of the year.",
              "Residents with questions can visit the {venue} on weekday mornings.",
              "A delegation from {town} is expected in the capital of {country} in {month2}."]


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _cap(sentence: str) -> str:
    # Pool values such as "the Harbour Trust" may open a sentence.
    return sentence[:1].upper() + sentence[1:]


def article_targets(n: int, seed: int) -> list[int]:
    """Target word counts of ``n`` articles, in a seeded random order.

    One draw from each of ``n`` equal-probability strata of the truncated log-normal, so even 20 or 40
    articles span the whole range (~300 to ~2000) with the median near MEDIAN_WORDS.
    """
    rng = random.Random(f"muse-lengths-{seed}")
    dist = NormalDist(math.log(MEDIAN_WORDS), SIGMA)
    lo, hi = dist.cdf(math.log(MIN_WORDS)), dist.cdf(math.log(MAX_WORDS))
    targets = [round(math.exp(dist.inv_cdf(lo + (hi - lo) * (k + rng.random()) / n))) for k in range(n)]
    rng.shuffle(targets)
    return targets


def _article_facts(e: dict, rng: random.Random) -> dict:
    """The event's facts plus invented background for its town (drawn once, so the article agrees)."""
    agendas = rng.sample(AGENDAS, 2)
    weekdays = rng.sample(WEEKDAYS, 2)
    return {**e, "neighbour": rng.choice([t for t in TOWNS if t not in (e["town"], e["rival_town"])]),
            "population": rng.randint(4, 60), "distance": rng.randint(6, 80), "origin": rng.choice(ORIGINS),
            "founded": rng.randint(1180, 1790), "industry": rng.choice(INDUSTRIES),
            "cold_year": rng.randint(1947, 1987), "decline": rng.randint(5, 30), "hotels": rng.randint(3, 19),
            "strike_year": rng.randint(1988, 2019), "weeks": rng.randint(3, 14),
            "count": rng.randint(20, 400), "small": rng.randint(3, 12), "speed": rng.randint(90, 160),
            "month2": rng.choice(MONTHS),
            "venue": rng.choice(VENUES), "agenda": agendas[0], "agenda2": agendas[1],
            "weekday": weekdays[0], "weekday2": weekdays[1]}


class _Deck:
    """Draw from a pool without replacement, reshuffling once it runs out (few repeats, never stuck)."""

    def __init__(self, pool: list, rng: random.Random):
        self.pool, self.rng, self.left = list(pool), rng, []

    def draw(self):
        if not self.left:
            self.left = self.rng.sample(self.pool, len(self.pool))
        return self.left.pop()


def _fresh(f: dict, rng: random.Random) -> dict:
    """Values drawn anew for every quote or scene: a speaker, their job, a shop, a street, numbers."""
    pronoun = rng.choice(sorted(RESIDENT_FIRST))
    resident = f"{rng.choice(RESIDENT_FIRST[pronoun])} {rng.choice(RESIDENT_LAST)}"
    return {**f, "resident": resident, "pronoun": pronoun, "a_rjob": _with_article(rng.choice(JOBS)),
            "years": rng.randint(3, 70), "age": rng.randint(19, 88), "moved": rng.randint(1965, 2020),
            "venue": rng.choice(VENUES), "shop": rng.choice(SHOPS), "since": rng.randint(1890, 2005),
            "street": rng.choice(STREETS), "food": rng.choice(FOODS), "hour": rng.randint(6, 11),
            "signatures": rng.randint(40, 2000),
            "other_town": rng.choice([t for t in TOWNS if t != f["town"]])}


def _fixed(pool: list[str], f: dict, rng: random.Random) -> list[str]:
    # Sentences without fresh values: used at most once per article, in a random order.
    return [_cap(s.format(**f)) for s in rng.sample(pool, len(pool))]


def long_article(lead: str, e: dict, target_words: int, seed: int, index: int) -> str:
    """``lead`` (the compact article of event ``e``, first letter capitalised) followed by paragraphs
    until ``target_words`` words (``str.split`` words; the last sentence may overshoot by a few).
    Paragraphs are separated by a blank line; ``index`` (the article's place) keys the random draws."""
    rng = random.Random(f"muse-article-{seed}-{index}")
    f = _article_facts(e, rng)
    quotes = _Deck(QUOTES + KIND_QUOTES[e["kind"]], rng)
    fixed = {"details": _fixed(KIND_DETAILS[e["kind"]], f, rng), "background": _fixed(BACKGROUND, f, rng),
             "next": _fixed(NEXT_STEPS, f, rng)}

    def sentence(kind: str) -> str:
        if fixed.get(kind):
            return fixed[kind].pop()
        if kind == "scene" or (kind != "quotes" and rng.random() < 0.5):  # a used-up pool: fill in
            return _cap(rng.choice(SCENES).format(**_fresh(f, rng)))
        return rng.choice(QUOTE_FRAMES).format(**{**_fresh(f, rng), "quote": quotes.draw()})

    # Section order of a news story: details, voices, background, scenes, voices, what happens next;
    # then voices, scenes and the rest of the background and next steps take turns.
    sections = ["details", "quotes", "background", "scene", "quotes", "next"]
    later = ["quotes", "scene", "background", "quotes", "next", "scene"]
    paragraphs, n_words, seen = [_cap(lead)], len(lead.split()), set()
    for k in range(10_000):  # ends long before: (almost) every paragraph adds sentences
        if n_words >= target_words:
            break
        kind = sections[k] if k < len(sections) else later[k % len(later)]
        sentences = []
        for _ in range(rng.randint(2, 5)):
            if n_words >= target_words:
                break
            s = sentence(kind)
            if s not in seen:  # a repeated sentence reads like a glitch; draw again next turn instead
                seen.add(s)
                sentences.append(s)
                n_words += len(s.split())
        if sentences:
            paragraphs.append(" ".join(sentences))
    return PARAGRAPH.join(paragraphs)
