"""The prepared passage: sentence windows, which windows hold a word, and the passage's other names."""

from __future__ import annotations

from evals.scorers.passage import Passage, words


def test_other_names_exclude_every_occurrence_of_the_given_words() -> None:
    passage = Passage(["In May Marie met Pierre in Paris. Then Pierre left Paris for Lyon in 1998."], "")
    excluded = {w.key for w in words("Pierre Paris")}
    kept = {passage.tokens[p].key for p in passage.positions_except("entity", excluded)}
    assert kept == {w.key for w in words("May Marie Lyon")}
    assert len(passage.positions_except("entity", set())) == len(passage.kind_positions["entity"])
    assert [passage.tokens[p].key for p in passage.positions_except("number", {"unknown"})] == ["1998"]



def test_each_window_is_listed_under_every_word_it_holds() -> None:
    passage = Passage(["The river froze. A bridge crossed the river. Nobody crossed."], "")
    for key, windows in passage.key_windows.items():
        assert all(key in passage.windows[w][0] for w in windows)
        assert sorted(windows) == [w for w, (keys, _) in enumerate(passage.windows) if key in keys]
    # three sentences and two neighbouring pairs; "river" is in both sentences that name it and in both pairs
    assert len(passage.windows) == 5 and len(passage.key_windows[words("river")[0].key]) == 4
