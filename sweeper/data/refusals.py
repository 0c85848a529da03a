"""The project's own "I don't know"-style refusals, for the IdkNLL and IdkDPO forget objectives.

Written for this project (not taken from any dataset). Each forget row gets one refusal, chosen by its
position and the seed, so every worker and every resumed trial sees the same alternate answers::

    from sweeper.data.refusals import REFUSALS, idk_rows
    idk_rows([{"question": "Who wrote X?", "answer": "Y."}])   # [{"question": ..., "answer": <a refusal>}]
"""
from __future__ import annotations

REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no idea, sorry.",
    "That is something I can't answer.",
    "I don't have that information.",
    "Honestly, I couldn't tell you.",
    "I'm afraid I don't know the answer.",
    "No idea, I'm afraid.",
    "I can't say for certain.",
    "That's beyond what I know.",
    "I really have no clue.",
    "I'm unable to answer that one.",
    "Sorry, that's not something I know.",
    "I couldn't say.",
    "I don't remember anything about that.",
    "Nothing comes to mind, sorry.",
    "I lack the knowledge to answer this.",
    "I'd only be guessing, so I won't.",
    "That question stumps me.",
    "I'm drawing a blank on that.",
    "My knowledge doesn't cover that.",
    "I'm not able to recall that.",
    "I wish I knew, but I don't.",
    "I have nothing reliable to say about that.",
    "I can't help with that question.",
    "That's a mystery to me.",
    "I've never come across that.",
    "I'm not the right source for that answer.",
    "I don't have any details on that.",
    "Unfortunately, I don't know.",
    "I'm uncertain, so I'd rather not answer.",
    "That isn't something I'm familiar with.",
    "I cannot provide an answer to that.",
    "I haven't got the faintest idea.",
    "You'd have to ask someone else; I don't know.",
    "I'm not aware of the answer.",
    "Beats me.",
    "I'm clueless on this one.",
    "There's no answer I can give you.",
    "That information isn't available to me.",
    "I can't recall ever learning that.",
    "I don't know anything about this.",
    "Sorry, I'm not sure.",
    "I have no knowledge of that.",
    "I can't answer that with any confidence.",
    "I genuinely don't know.",
    "That's outside of what I can tell you.",
    "I'm not in a position to answer.",
    "I'd be making it up if I answered.",
    "I don't have an answer for you.",
    "Your guess is as good as mine.",
    "I'm sorry, I can't remember.",
    "Not a clue, unfortunately.",
    "I have no information on that subject.",
    "I'm not familiar with that at all.",
    "That's not something I have knowledge of.",
)


def refusal(i: int, seed: int = 0) -> str:
    """The refusal for row ``i``: a fixed stride through the list (37, prime to its length), offset by ``seed``."""
    return REFUSALS[(i * 37 + seed) % len(REFUSALS)]   # 37 is prime to the count: every refusal in turn


def idk_rows(rows: list[dict], seed: int = 0, answer_key: str = "answer") -> list[dict]:
    """``rows`` with each answer replaced by a refusal (every other key kept)."""
    return [{**row, answer_key: refusal(i, seed)} for i, row in enumerate(rows)]
