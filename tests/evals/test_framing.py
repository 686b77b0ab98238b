"""Surface that asserts nothing (letter case, framing preambles) is normalised before scoring, in place, so that
neither tier can be moved by it and claim offsets still index the caller's text."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from evals.scorers.base import Scorer
from evals.scorers.claim_support import ClaimSupportScorer
from evals.scorers.detector import HallucinationDetector
from evals.scorers.framing import blank_framing, blank_marks, noise_casing, normalise, recase

DOCUMENT = ("Storm Ciara hit Britain on Sunday. The Met Office said winds reached 97 mph in Aberdaron, Wales. "
            "NASA satellites tracked the storm across the Atlantic. More than 500 flights were cancelled at "
            "Heathrow.")
SUMMARY = "Storm Ciara hit Britain on Sunday. Winds reached 97 mph in Aberdaron, Wales."
INVENTED = "Storm Ciara hit Scotland on Monday. Winds reached 140 mph in Glasgow."
CONTEXT = "Paris is the capital and largest city of France. Lyon is the third-largest city of France."
QUESTION = "What is the capital of France?"


def test_a_one_case_answer_takes_the_case_the_sources_write() -> None:
    assert recase(SUMMARY.lower(), [DOCUMENT]) == SUMMARY
    assert recase(SUMMARY.upper(), [DOCUMENT]) == SUMMARY
    # An acronym seen only at a sentence start keeps its capitals; "More" there says nothing about "more".
    assert recase("nasa tracked more than 500 storms.", [DOCUMENT]) == "NASA tracked more than 500 storms."
    # A word the sources lack is lower case: a name they lack weighs as a word, never as a known name.
    assert recase("STORM CIARA HIT GLASGOW ON A WET SUNDAY.", [DOCUMENT]) == "Storm Ciara hit glasgow on a wet Sunday."


def test_mixed_case_is_the_writers_and_is_left_alone() -> None:
    for text in (SUMMARY, "iPhone sales rose.", "The BBC said so.", "1990", ""):
        assert recase(text, [DOCUMENT]) == text
    noise = lambda text: noise_casing(text, [DOCUMENT]) is not None  # noqa: E731
    assert noise("yes") and noise("the storm hit britain.") and not noise("42") and not noise(SUMMARY)
    # Capitals and Title Case are noise from six words on; a short answer in capitals is most likely a name.
    assert noise(SUMMARY.upper()) and noise("Storm Ciara Hit Britain On Sunday As Winds Reached 97 Mph.")
    assert noise("Storm Ciara Hit Britain on Sunday as Winds Reached 97 Mph.")  # stopwords may stay lower case
    assert not noise("ANGELA MERKEL") and not noise("No.")
    # Names are capitalised because they are names: a list of them stays as written.
    assert not noise("Met Office, Aberdaron, Wales, Heathrow, Atlantic, Britain, Ciara and NASA were named.")


@pytest.mark.parametrize(("framed", "claim"), [
    ("According to the passage, Paris is the capital.", "Paris is the capital."),
    ("Based on the context provided, the answer is Paris.", "Paris."),
    ("Answer: Paris", "Paris"),
    ("Well, according to the text, I think Paris is the capital.", "Paris is the capital."),
    ("As far as I can tell from the information given, Paris is the capital.", "Paris is the capital."),
    ("The passage says that Paris is the capital.", "Paris is the capital."),
    ("Lyon is a city. In summary, the capital is Paris.", "The capital is Paris."),
])
def test_a_framing_preamble_is_blanked_in_place(framed: str, claim: str) -> None:
    blanked = blank_framing(framed)
    assert len(blanked) == len(framed)
    assert blanked.rstrip().endswith(claim) and blanked[: blanked.index(claim)].strip() in ("", "Lyon is a city.")


@pytest.mark.parametrize("text", [
    "Yes, according to the passage, it is.",  # takes a side: an answer, not a frame
    "No, based on the text, it is not.",
    "According to Le Monde, Paris is the capital.",  # an attribution to a named source is a claim
    "In 1990, Paris grew.",
    "Well, Paris is lovely.",  # a reply's "Well," alone is how it starts
    "According to the passage:",  # nothing left to judge
    "The capital, Paris, is large.",
])
def test_what_is_not_a_frame_is_kept(text: str) -> None:
    assert blank_framing(text) == text


@pytest.mark.parametrize(("marked", "read"), [
    ("Paris is the capital [1].", "Paris is the capital    ."),
    ("Paris [1, 2] and Lyon [source 3].", "Paris        and Lyon           ."),
    ("1. Paris is big.\n2) Lyon is small.", "-  Paris is big.\n-  Lyon is small."),  # still two claims
    ("Paris is the capital (according to the passage).", "Paris is the capital                           ."),
    ("Paris (the capital) has 2 parks.", "Paris (the capital) has 2 parks."),  # a parenthesis that says something
    ("In 1990. Paris grew by 1.5 million [sic].", "In 1990. Paris grew by 1.5 million [sic]."),
])
def test_citation_marks_list_numbers_and_framing_asides_are_not_claims(marked: str, read: str) -> None:
    assert blank_marks(marked) == read


@pytest.mark.parametrize("hedge", ["It might be that ", "Perhaps ", "Probably "])
def test_a_hedge_in_front_of_a_claim_is_blanked(hedge: str) -> None:
    assert blank_framing(hedge + "Paris is the capital.").strip() == "Paris is the capital."


def test_normalising_never_changes_the_length() -> None:
    rng = random.Random(5)
    vocabulary = ["according", "to", "the", "passage", ",", ":", ".", "Paris", "PARIS", "answer", "is", "I", "think",
                  "[1]", "(", ")", "1.", "\n2)", "perhaps",
                  "yes", "\n", "  ", "İSTANBUL", "ǅ", "ß", "1,000", "well", "NASA", "based", "on"]
    for _ in range(500):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 25)))
        for source in (DOCUMENT, text.upper(), ""):
            assert len(normalise(text, [source])) == len(text)


@pytest.fixture(scope="module", params=["detector", "claim_support"])
def offline(request: pytest.FixtureRequest) -> Scorer:
    return HallucinationDetector() if request.param == "detector" else ClaimSupportScorer()


@pytest.mark.parametrize("change", [str.lower, str.upper, str.title])
def test_a_summary_in_one_case_scores_as_written(offline: Scorer, change: Callable[[str], str]) -> None:
    # Before: the lower-case faithful summary lost its names and sentence breaks and was flagged; the same invented
    # summary in capitals turned every word into a name and passed.
    assert offline.score(answer=change(SUMMARY), contexts=[DOCUMENT]).score == \
        offline.score(answer=SUMMARY, contexts=[DOCUMENT]).score
    written = offline.score(answer=INVENTED, contexts=[DOCUMENT])
    changed = offline.score(answer=change(INVENTED), contexts=[DOCUMENT])
    assert [c.verdict for c in changed.claims] == [c.verdict for c in written.claims]
    assert changed.unsupported_claims
    assert not offline.score(answer=change(SUMMARY), contexts=[DOCUMENT]).unsupported_claims


@pytest.mark.parametrize(("preamble", "aside"), [
    ("According to the passage, ", ""), ("Answer: ", ""), ("I think ", ""), ("", " [1]"),
    ("Based on the context provided, the correct answer is ", ""), ("1. ", " (according to the text)"),
])
def test_framing_and_marks_move_no_score(offline: Scorer, preamble: str, aside: str) -> None:
    for answer in ("Paris is the capital of France", "Lyon is the capital of France"):
        plain = offline.score(answer=answer + ".", contexts=[CONTEXT], question=QUESTION)
        framed = offline.score(answer=preamble + answer + aside + ".", contexts=[CONTEXT], question=QUESTION)
        assert framed.score == plain.score
        assert [c.verdict for c in framed.claims] == [c.verdict for c in plain.claims]


def test_verdicts_quote_the_callers_text(offline: Scorer) -> None:
    answer = "according to the passage, lyon is the capital of germany. paris is in france."
    result = offline.score(answer=answer, contexts=[CONTEXT], question=QUESTION)
    assert [answer[c.start:c.end] for c in result.claims] == [c.claim for c in result.claims]
    assert [c.claim for c in result.claims] == ["lyon is the capital of germany.", "paris is in france."]
    assert [c.verdict for c in result.claims] == ["unsupported", "supported"]
