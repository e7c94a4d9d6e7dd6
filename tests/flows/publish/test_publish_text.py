"""NUL characters (which PostgreSQL text refuses) are replaced by U+FFFD; keys stay unique."""

from __future__ import annotations

import polars as pl

from memberpulse.flows.publish._storable_text import storable_members, storable_text


def test_nul_becomes_replacement_character_in_every_text_column() -> None:
    frame = pl.DataFrame({"id": ["a\x00", "b"], "name": [None, "x\x00\x00y"], "n": [1, 2]})
    clean = storable_text(frame)
    assert clean.to_dicts() == [{"id": "a\ufffd", "name": None, "n": 1}, {"id": "b", "name": "x\ufffd\ufffdy", "n": 2}]


def test_frame_without_nul_is_returned_as_is() -> None:
    frame = pl.DataFrame({"id": ["a", "b"]})
    assert storable_text(frame) is frame


def test_an_id_equal_to_another_after_replacement_is_dropped_and_the_genuine_one_kept() -> None:
    frame = pl.DataFrame({"membership_id": ["mem_\x00", "mem_\ufffd", "mem_2"], "v": [1, 2, 3]})
    assert storable_members(frame, "membership_id").to_dicts() == [
        {"membership_id": "mem_\ufffd", "v": 2},
        {"membership_id": "mem_2", "v": 3},
    ]
