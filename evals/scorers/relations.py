"""Two contradictions that word overlap cannot see: an opposite word, and names that traded places.

Both keep every word of the claim in the passage, so missing-word and window features pass them. An antonym
("won" where the passage says "lost") is found with a lexicon of everyday opposites; a role swap ("Giroud scored
twice" where the passage has "Sanchez scored twice ... Giroud added a third") is found from the words right next
to each name: a name whose claim neighbours never sit next to it in the passage, while they do sit next to another
name of the same claim, has taken that name's place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Protocol

from evals.scorers.text import token_key

# Everyday opposites, each line a set of inflections paired position by position ("won lost" and "wins loses").
# Only strict opposites: a word with two everyday senses that are not both opposed ("left", "over") is left out.
_OPPOSITES = """
win lose|won lost|wins loses|winning losing|winner loser|winners losers|victory defeat|victories defeats
before after|above below|higher lower|highest lowest|more less|more fewer|most least|most fewest
increase decrease|increased decreased|increases decreases|increasing decreasing|rise fall|rose fell|rises falls
rising falling|risen fallen|larger smaller|largest smallest|bigger smaller|biggest smallest|longer shorter
longest shortest|older younger|oldest youngest|taller shorter|tallest shortest|heavier lighter|faster slower
fastest slowest|earlier later|earliest latest|early late|first last|best worst|better worse|strong weak
stronger weaker|strongest weakest|rich poor|richer poorer|hot cold|hotter colder|wet dry|open closed
opened closed|opens closes|opening closing|start end|started ended|starts ends|begin end|began ended|beginning end
accept reject|accepted rejected|accepts rejects|approve reject|approved rejected|allow ban|allowed banned
legal illegal|guilty innocent|alive dead|male female|men women|man woman|boy girl|boys girls|husband wife
son daughter|sons daughters|father mother|brother sister|brothers sisters|king queen|north south|east west
northern southern|eastern western|inside outside|internal external|import export|imports exports
imported exported|buy sell|bought sold|buys sells|buying selling|buyer seller|true false|positive negative
success failure|successful unsuccessful|succeeded failed|pass fail|passed failed|support oppose
supported opposed|supports opposes|agree disagree|agreed disagreed|include exclude|included excluded
public private|maximum minimum|majority minority|always never|all none|everyone nobody|full empty|high low
top bottom|entrance exit|attack defend|attacked defended|offence defence|offense defense|offensive defensive
home away|domestic foreign|urban rural|modern ancient|cheap expensive|cheaper dearer|easy difficult|easier harder
safe dangerous|peace war|friend enemy|friends enemies|ally enemy|allies enemies|love hate|loved hated
gain loss|gains losses|gained lost|profit loss|profits losses|hired fired|employed unemployed|married divorced
born died|birth death|appear disappear|appeared disappeared|remember forget|remembered forgot|confirm deny
confirmed denied|confirms denies|admit deny|admitted denied|convicted acquitted|win draw
increase cut|raised lowered|raise lower|upper lower|inner outer|minor major|junior senior
temporary permanent|temporarily permanently|voluntary compulsory|asleep awake|absent present|arrive depart
arrived departed|arrival departure|input output|sunny rainy|summer winter|spring autumn
morning evening|dawn dusk|sunrise sunset|future past|plus minus|add subtract|added removed
""".replace("\n", "|").strip("|").split("|")


def _opposite_keys(lines: Iterable[str]) -> dict[str, frozenset[str]]:
    opposites: dict[str, set[str]] = {}
    for line in lines:
        first, second = (token_key(word) for word in line.split())
        if first != second:
            opposites.setdefault(first, set()).add(second)
            opposites.setdefault(second, set()).add(first)
    return {key: frozenset(values) for key, values in opposites.items()}


def _opposite_surfaces(lines: Iterable[str]) -> dict[str, str]:
    surfaces: dict[str, str] = {}
    for line in lines:
        first, second = line.split()
        surfaces.setdefault(first, second)
        surfaces.setdefault(second, first)
    return surfaces


OPPOSITES = _opposite_keys(_OPPOSITES)
# One opposite per word, as written: what the perturbation suite puts in.
OPPOSITE_SURFACES = _opposite_surfaces(_OPPOSITES)
# A neighbour "sits next to" a name when it is at most this many tokens away, on the same side as in the claim.
_NEXT_TO = 3
# Names compared per claim: every pair is checked, and a real sentence names far fewer.
_MAX_NAMES = 16


class Token(Protocol):
    """The part of a tokenised word these checks read."""

    index: int
    key: str
    kind: str


def antonym_conflicts(claim_keys: Iterable[str], window_keys: set[str]) -> int:
    """Return how many claim words are absent from their window while an opposite of theirs is in it."""
    return sum(1 for key in dict.fromkeys(claim_keys)
               if key not in window_keys and key in OPPOSITES and OPPOSITES[key] & window_keys)


def _next_to(name_positions: Sequence[int], neighbour_positions: Sequence[int], side: int) -> bool:
    """Return whether the neighbour occurs 1.._NEXT_TO tokens after (side 1) or before (side -1) the name."""
    return any(0 < side * (q - p) <= _NEXT_TO for p in name_positions[:20] for q in neighbour_positions[:40])


def role_conflicts(content: Sequence[Token], positions: dict[str, list[int]], name_keys: set[str]) -> int:
    """Return how many claim names sit among neighbours that, in the passage, sit next to another claim name.

    ``content`` is the claim's content words (stopwords removed) in order; a name is a run of adjacent capitalised
    words (a claim's first word counts when the passage writes it as a name: ``name_keys``). Each name's neighbours
    are the nearest non-name content word before and after it that the passage has.
    """
    def is_name(word: Token) -> bool:
        return word.kind == "entity" or (word.index == 0 and word.key in name_keys)

    runs: list[list[Token]] = []
    for word in content:
        if is_name(word) and runs and is_name(runs[-1][-1]) and word.index == runs[-1][-1].index + 1:
            runs[-1].append(word)
        else:
            runs.append([word])
    # A name counts when the passage has both of its ends (neighbours are checked against the ends).
    names = [(i, run) for i, run in enumerate(runs)
             if is_name(run[0]) and run[0].key in positions and run[-1].key in positions][:_MAX_NAMES]
    if len(names) < 2:
        return 0
    conflicts = 0
    for i, run in names:
        checks = []
        for side, step in ((-1, range(i - 1, -1, -1)), (1, range(i + 1, len(runs)))):
            # The nearest non-name word at most two words away: farther words belong to another part of the claim.
            neighbour = next((runs[j][0] for j in islice(step, 2) if not is_name(runs[j][0])), None)
            if neighbour is not None and neighbour.key in positions:
                edge = run[0] if side < 0 else run[-1]
                checks.append((side, neighbour.key, positions[edge.key]))
        if not checks or any(_next_to(own, positions[key], side) for side, key, own in checks):
            continue
        others = [other for j, other in names if j != i]
        if any(_next_to(positions[(other[0] if side < 0 else other[-1]).key], positions[key], side)
               for side, key, _ in checks for other in others):
            conflicts += 1
    return conflicts
