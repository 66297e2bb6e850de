"""The clause chunker decides when speech can start: early for the first chunk, then by clause."""

from __future__ import annotations

from openrealtime.runtime.pipeline import ClauseChunker


def feed(chunker: ClauseChunker, text: str) -> list[str]:
    out: list[str] = []
    for token in text.split(" "):
        out += chunker.push(token + " ")
    return out + chunker.flush()


def test_first_chunk_is_cut_at_the_first_clause_end() -> None:
    chunks = feed(ClauseChunker(), "Hi, the capital of France is Paris. It is lovely in spring.")
    assert chunks[0] == "Hi,"
    assert (
        "".join(chunks).split()
        == "Hi, the capital of France is Paris. It is lovely in spring.".split()
    )
    assert chunks[1].strip() == "the capital of France is Paris."


def test_first_chunk_is_cut_after_three_words_without_punctuation() -> None:
    chunker = ClauseChunker()
    got: list[str] = []
    for word in "The capital city of France is Paris and".split():
        got += chunker.push(word + " ")
        if got:
            break
    assert got == ["The capital city "]


def test_later_clauses_wait_for_enough_text() -> None:
    chunks = feed(ClauseChunker(), "Yes. Ok, fine, we can do that, said the man.")
    assert chunks[0] == "Yes."
    assert all(len(c.strip()) >= 12 for c in chunks[1:-1])
