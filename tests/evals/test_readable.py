"""What the offline tiers can read: Unicode folding with offsets kept, text in other scripts found, and both
offline tiers refusing to vouch for what they cannot read."""

from __future__ import annotations

import random
import unicodedata

import pytest

from evals.scorers.base import Scorer
from evals.scorers.claim_support import ClaimSupportScorer
from evals.scorers.detector import HallucinationDetector
from evals.scorers.readable import fold, foreign_words, unreadable

CONTEXT = "Paris is the capital and largest city of France. Lyon is the third-largest city of France."
QUESTION = "What is the capital of France?"
FULLWIDTH_BERLIN = "".join(chr(ord(c) + 0xFEE0) for c in "Berlin")  # U+FF22 U+FF45 ...


def test_folding_turns_compatibility_forms_into_what_the_tokeniser_reads() -> None:
    assert fold(FULLWIDTH_BERLIN).text == "Berlin"
    assert fold("Ger\u200bma\u00adny\u200d").text == "Germany"  # zero-width space, soft hyphen, joiner
    assert fold("\ufb01ne").text == "fine"  # the "fi" ligature
    assert fold("No\u00a0change").text == "No change"


def test_folded_spans_map_back_to_the_original_characters() -> None:
    original = "\u200bThe \ufb01lm " + FULLWIDTH_BERLIN + "."
    folded = fold(original)
    assert folded.text == "The film Berlin."
    start = folded.text.index("Berlin")
    low, high = folded.span(start, start + len("Berlin"))
    assert original[low:high] == FULLWIDTH_BERLIN
    low, high = folded.span(folded.text.index("film"), folded.text.index("film") + 4)
    assert original[low:high] == "\ufb01lm"  # two folded characters come from one ligature
    assert folded.span(3, 3) == (4, 4)  # an empty span stays empty, after the dropped zero-width space


def test_every_folded_character_maps_to_the_character_it_came_from() -> None:
    rng = random.Random(3)
    alphabet = ["a", "B", " ", ".", "\u200b", "\u00ad", "\ufb01", "\u00bd", "\uff22", "\u00a0", "é", "Ж"]
    for _ in range(500):
        original = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        folded = fold(original)
        positions = [folded.position(i) for i in range(len(folded.text))]
        assert positions == sorted(positions)
        for i, at in enumerate(positions):
            source = original[at]
            assert folded.text[i] == source or folded.text[i] in unicodedata.normalize("NFKC", source)
        low, high = folded.span(0, len(folded.text))
        assert fold(original[low:high]).text == folded.text


def test_ascii_text_is_returned_untouched_without_a_map() -> None:
    folded = fold("Plain text, 42 words.")
    assert folded.text == "Plain text, 42 words." and folded.changes == () and folded.span(2, 7) == (2, 7)


@pytest.mark.parametrize("text", ["Берлин — столица Франции.", "巴黎是德国的首都。", "Η Αθήνα είναι πρωτεύουσα.",  # noqa: RUF001
                                  "باريس عاصمة فرنسا"])
def test_other_scripts_are_unreadable(text: str) -> None:
    assert unreadable(text) and foreign_words(text)


@pytest.mark.parametrize("text", ["Zoë lives in Łódź on the Straße.", "Béziers won 3-1.", "plain ascii"])
def test_accented_latin_is_readable(text: str) -> None:
    assert not unreadable(text) and foreign_words(text) == []


def test_one_foreign_word_in_an_english_sentence_leaves_it_readable() -> None:
    sentence = "The film Брат (1997) by Balabanov was a hit."
    assert not unreadable(sentence) and foreign_words(sentence) == ["Брат"]


@pytest.fixture(scope="module", params=["detector", "claim_support"])
def offline(request: pytest.FixtureRequest) -> Scorer:
    return HallucinationDetector() if request.param == "detector" else ClaimSupportScorer()


@pytest.mark.parametrize("answer", ["Берлин — столица Франции.", "巴黎是德国的首都。", "Париж — столица Франции."])
def test_an_answer_the_tier_cannot_read_is_unsupported_not_waved_through(offline: Scorer, answer: str) -> None:
    # Before: no ASCII token meant "no checkable content" and a perfect 1.0, whatever the answer said.
    result = offline.score(answer=answer, contexts=[CONTEXT], question=QUESTION)
    assert result.score == 0.0 and "cannot read" in result.note
    assert [c.verdict for c in result.claims] == ["unsupported"]
    assert result.claims[0].claim == answer and result.claims[0].unsupported_terms


def test_a_name_hidden_in_fullwidth_letters_scores_like_the_plain_name(offline: Scorer) -> None:
    plain = offline.score(answer="The capital of France is Berlin.", contexts=[CONTEXT], question=QUESTION)
    hidden = offline.score(answer=f"The capital of France is {FULLWIDTH_BERLIN}.", contexts=[CONTEXT],
                           question=QUESTION)
    assert hidden.score == plain.score
    assert [c.verdict for c in hidden.claims] == [c.verdict for c in plain.claims] == ["unsupported"]
    assert hidden.claims[0].claim.endswith(f"{FULLWIDTH_BERLIN}.")  # the caller's text, not the folded one


def test_claim_offsets_index_the_text_the_caller_sent(offline: Scorer) -> None:
    answer = "Paris\u200b is the capital. Lyon is the ca\u00adpital of Ger\u200bmany."
    result = offline.score(answer=answer, contexts=[CONTEXT], question=QUESTION)
    assert [answer[c.start:c.end] for c in result.claims] == [c.claim for c in result.claims]
    assert result.claims[-1].claim.endswith("Ger\u200bmany.") and result.claims[-1].verdict == "unsupported"


def test_one_word_in_another_script_cannot_hide_a_name(offline: Scorer) -> None:
    # The tokeniser skips the Cyrillic name, so the rest ("the capital of France is") looked supported.
    result = offline.score(answer="The capital of France is Берлин.", contexts=[CONTEXT], question=QUESTION)
    assert [c.verdict for c in result.claims] == ["unsupported"] and result.score == 0.0
    assert "Берлин" in result.claims[0].unsupported_terms


def test_a_word_in_another_script_that_the_context_contains_is_not_held_against_the_claim(offline: Scorer) -> None:
    context = "The film Брат was directed by Aleksei Balabanov in 1997. It made Sergei Bodrov a star."
    result = offline.score(answer="Aleksei Balabanov directed Брат in 1997.", contexts=[context],
                           question="Who directed the film Брат?")
    assert "cannot read" not in result.note and result.claims[0].verdict == "supported"
    assert "Брат" not in result.claims[0].unsupported_terms


def test_a_name_spoofed_with_a_lookalike_letter_is_listed_whole(offline: Scorer) -> None:
    spoofed = "L\u0443on"  # "Lyon" with a Cyrillic U+0443 for its "y"
    result = offline.score(answer=f"The capital of France is {spoofed}.", contexts=[CONTEXT], question=QUESTION)
    assert result.claims[0].verdict == "unsupported" and spoofed in result.claims[0].unsupported_terms


def test_small_talk_is_still_not_checkable(offline: Scorer) -> None:
    result = offline.score(answer="Ok, sure.", contexts=[CONTEXT], question=QUESTION)
    assert result.score == 1.0 and [c.verdict for c in result.claims] == ["not_checkable"]
