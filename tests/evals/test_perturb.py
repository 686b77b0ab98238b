"""The perturbation suite: minimal hallucinations change one fact, faithful rewrites change none."""

from __future__ import annotations

from evals.perturb import FAITHFUL_KINDS, HALLUCINATION_KINDS, perturb, question_options

CONTEXT = ("Simon Kirke (born 28 July 1949) is an English rock drummer best known as a member of Free and Bad "
           "Company. Free were an English rock band formed in London in 1968 with 4 members.")


def _by_kind(answer: str, question: str = "", context: str = CONTEXT) -> dict[str, tuple[str, int]]:
    return {p.kind: (p.answer, p.label) for p in perturb(answer, context, question, seed=3)}


def test_short_answers_get_swaps_negation_and_restatements() -> None:
    kinds = _by_kind("Free", "Simon Kirke was a member of which rock band?")
    swapped, label = kinds["entity_swap"]
    assert label == 1 and swapped != "Free" and swapped in CONTEXT
    assert kinds["negation"] == ("It is not Free.", 1)
    assert kinds["it_is"] == ("It is Free.", 0) and kinds["correct_answer"] == ("The correct answer is Free.", 0)
    assert all(label == (kind in HALLUCINATION_KINDS) for kind, (_, label) in kinds.items())
    assert set(kinds) <= set(HALLUCINATION_KINDS) | set(FAITHFUL_KINDS)


def test_numbers_dates_options_and_yes_no() -> None:
    sentence = _by_kind("Free was formed in 1968 with 4 members in London.")
    assert sentence["date_change"][0] != "Free was formed in 1968 with 4 members in London."
    assert "1968" not in sentence["date_change"][0] and "4 members" in sentence["date_change"][0]
    assert "4 members" not in sentence["number_change"][0] and sentence["negation"][0].startswith("Free was not")
    question = "Which band was formed first, Free or Bad Company?"
    assert question_options(question) == ("Free", "Bad Company")
    assert _by_kind("Free", question)["option_swap"] == ("Bad Company", 1)
    flipped = _by_kind("Yes, both are English bands.", "Are Free and Bad Company both English?")
    assert flipped["yes_no_flip"] == ("No, both are English bands.", 1)


def test_perturbations_are_deterministic_and_never_repeat_the_answer() -> None:
    answer = "Simon Kirke is a drummer. He played in Free."
    first, second = perturb(answer, CONTEXT, "", seed=7), perturb(answer, CONTEXT, "", seed=7)
    assert first == second and all(p.answer.strip() != answer for p in first)
    assert len({p.answer for p in first}) == len(first)


def test_opposites_and_role_swaps() -> None:
    match = ("On Saturday, Liverpool were beaten 4-1 by Arsenal. Sanchez scored twice before half-time, "
             "and Giroud added a third.")
    kinds = _by_kind("Liverpool were beaten 4-1 by Arsenal. Sanchez scored before half-time.", context=match)
    assert kinds["role_swap"] == ("Arsenal were beaten 4-1 by Liverpool. Sanchez scored before half-time.", 1)
    assert kinds["antonym"] == ("Liverpool were beaten 4-1 by Arsenal. Sanchez scored after half-time.", 1)


def test_role_swaps_skip_lists_symmetric_relations_and_sentence_starts() -> None:
    context = "Smith starred with Jones in Paris. Brown and Green wrote the score. Police arrested Carter."
    for answer in ("Smith starred with Jones.", "Brown and Green wrote the score.", "Police arrested Carter."):
        assert "role_swap" not in _by_kind(answer, context=context)
    # A capitalised word inside a name is not an everyday word: "Western Roman Empire" keeps its "Western".
    assert "antonym" not in _by_kind("The Western Roman Empire lasted.", context="The Western Roman Empire.")
