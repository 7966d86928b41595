"""Virtual inputs: deterministic, k distinct copies, word counts kept, protected spans untouched, clear errors."""

import gzip
import json
import random

import pytest

from study.augment import Synonyms, load_neighbour_file, load_synonyms, roget_neighbours, virtual_copies
from study.errors import StudyError

TEXT = "The quick brown fox jumps over the lazy dog, and the movie was great."


@pytest.fixture(scope="module")
def roget():
    return load_synonyms("roget")


def test_roget_source_is_a_real_thesaurus(roget):
    assert roget.source == "roget" and len(roget.table) > 20_000
    assert {"fast", "swift"} <= set(roget.table["quick"]) and "large" in roget.table["big"]
    assert all(len(v) <= 8 and all(" " not in n for n in v) for v in roget.table.values())


def test_copies_are_deterministic_for_a_seed_and_differ_across_seeds(roget):
    draw = lambda rng: roget.substitute_text(TEXT, rng)[0]
    first = virtual_copies(draw, 3, seed=7, example_id=0)
    assert first == virtual_copies(draw, 3, seed=7, example_id=0)
    assert first != virtual_copies(draw, 3, seed=8, example_id=0)
    assert first != virtual_copies(draw, 3, seed=7, example_id=1)


@pytest.mark.parametrize("source", ["roget", "reference"])
def test_k_distinct_copies_with_the_same_word_count(source, roget, synonym_file):
    synonyms = roget if source == "roget" else load_synonyms(str(synonym_file))
    copies = virtual_copies(lambda rng: synonyms.substitute_text(TEXT, rng)[0], 5, seed=0, example_id="ex")
    assert len(copies) == len(set(copies)) == 5
    assert all(len(c.split()) == len(TEXT.split()) for c in copies)
    assert any(c != TEXT for c in copies)


def test_tagging_words_keep_positions(roget):
    words = ["The", "movie", "was", "great", "."]
    out = roget.substitute_words(words, random.Random(0))
    assert len(out) == len(words) and out[0] == "The" and out[-1] == "."


def test_protected_spans_are_untouched_and_moved(roget):
    answer = "brown fox"
    start = TEXT.index(answer)
    for seed in range(20):
        new, [(s, e)] = roget.substitute_text(TEXT, random.Random(seed), protected=[(start, start + len(answer))])
        assert new[s:e] == answer


def test_case_and_punctuation_are_kept():
    synonyms = Synonyms({"dog": ["hound"], "great": ["superb"]}, "test")
    rng = random.Random(0)
    outputs = {synonyms.substitute_text("Dog, GREAT!", rng)[0] for _ in range(50)}
    assert outputs == {"Dog, GREAT!", "Hound, GREAT!", "Dog, SUPERB!", "Hound, SUPERB!"}


def test_words_without_neighbours_mean_repeated_copies_not_an_error():
    synonyms = Synonyms({}, "empty")
    assert virtual_copies(lambda rng: synonyms.substitute_text("hi there", rng)[0], 3, 0, 0) == ["hi there"] * 3


def test_user_neighbour_file_is_normalised(tmp_path):
    path = tmp_path / "n.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"Movie": ["film", "motion picture", "film", "cinema"], "a": []}, f)
    table = load_neighbour_file(path)
    assert table == {"movie": ["film", "cinema"], "a": []}  # multi-word neighbours would change word counts


@pytest.mark.parametrize("content, message", [
    ("{not json", r"is not valid JSON \(line 1"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"movie": "film"}', "entry for 'movie' must be a list of strings"),
])
def test_malformed_neighbour_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(StudyError, match=message) as info:
        load_neighbour_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_neighbour_file_and_bad_k(tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        load_synonyms(str(tmp_path / "none.json"))
    with pytest.raises(StudyError, match="k=0"):
        virtual_copies(lambda rng: "x", 0, 0, 0)


def test_roget_table_is_cached():
    assert roget_neighbours() is roget_neighbours()
