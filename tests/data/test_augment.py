"""Virtual inputs: deterministic, k distinct copies, word counts kept, protected spans untouched, clear errors."""

import gzip
import json
import random

import pytest

from study.core.errors import StudyError
from study.data.augment import Synonyms, load_neighbour_file, load_synonyms, roget_neighbours, virtual_copies

TEXT = "The quick brown fox jumps over the lazy dog, and the movie was great."


@pytest.fixture(scope="module")
def roget():
    return load_synonyms("roget")


def test_roget_source_is_a_real_thesaurus(roget):
    assert roget.source == "roget" and len(roget.table) > 20_000
    assert {"fast", "swift"} <= set(roget.table["quick"]) and "large" in roget.table["big"]
    assert all(len(v) <= 8 and all(" " not in n for n in v) for v in roget.table.values())


def test_copies_are_deterministic_for_a_seed_and_differ_across_seeds(roget):
    def draw(rng):
        return roget.substitute_text(TEXT, rng)[0]

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


# --- the released code's matching and resource ---------------------------------------------------------------------


def test_exact_matching_leaves_capitalised_and_punctuated_tokens_untouched(synonym_file):
    exact = load_synonyms(str(synonym_file), "exact")
    assert exact.matching == "exact" and exact.table["united"] == ["unified", "unify"]
    assert sum(1 for v in exact.table.values() if v) == 25_591  # every word with neighbours, as in the file
    text = "United States troops said the movie, a film about the war. The movie was great"
    untouched = ["United", "States", "movie,", "war.", "The"]  # keys are lower-case bare words
    seen = set()
    for seed in range(200):
        new = exact.substitute_text(text, random.Random(seed))[0]
        tokens = new.split(" ")
        assert len(tokens) == len(text.split(" "))
        assert [tokens[i] for i in (0, 1, 5, 10, 11)] == untouched, new
        seen.update(t for t, o in zip(tokens, text.split(" "), strict=True) if t != o)
    assert {"film", "movies"} & seen and "cinema" in seen  # lower-case bare words are replaced ("movie" at the end)
    assert exact.substitute_words(["United", "movie", "movie."], random.Random(3))[::2] == ["United", "movie."]


def test_exact_matching_splits_on_single_spaces_like_the_released_code():
    exact = Synonyms({"movie": ["film"], "great": ["superb"]}, "test", "exact")
    outputs = {exact.substitute_text("movie\tgreat  great", random.Random(seed))[0] for seed in range(50)}
    # "movie\tgreat" is one token (split(' ')); the double space stays and the last "great" is a token of its own
    assert outputs == {"movie\tgreat  great", "movie\tgreat  superb"}


def test_words_matching_replaces_capitalised_words_where_exact_does_not(synonym_file):
    words = load_synonyms(str(synonym_file))
    draws = {words.substitute_text("United States", random.Random(seed))[0] for seed in range(50)}
    assert {"Unified States", "Unify States"} & draws  # the default matching: capitalised words are replaced


def test_counter_fitted_is_downloaded_once_checked_and_cached(synonym_file, tmp_path, monkeypatch):
    import hashlib
    import urllib.request

    from study.data import augment

    payload = gzip.decompress(synonym_file.read_bytes())
    assert hashlib.sha256(payload).hexdigest() == augment.COUNTER_FITTED_SHA256  # the pinned file is the local copy
    calls = []

    class Response:
        def __init__(self, data):
            self.data = data

        def read(self):
            return self.data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout):
        calls.append(url)
        return Response(payload)

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    synonyms = load_synonyms("counter-fitted", "exact")
    assert calls == [augment.COUNTER_FITTED_URL] and synonyms.source == "counter-fitted"
    assert synonyms.table == load_synonyms(str(synonym_file), "exact").table
    load_synonyms("counter-fitted")
    assert len(calls) == 1  # cached: never downloaded twice
    assert augment.synonym_source_label("counter-fitted").startswith("counter-fitted (Mrkšić et al. 2016")


def test_counter_fitted_offline_or_corrupted_is_one_clear_line(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(StudyError, match="cannot download .*pass a local copy .* as --synonyms FILE, or "
                                         r"--synonyms roget \(an offline substitute\)") as info:
        load_synonyms("counter-fitted")
    assert "\n" not in str(info.value)

    class Corrupted:
        def read(self):
            return b"{}"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Corrupted())
    with pytest.raises(StudyError, match="has SHA-256 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                                         ", not 1032471"):
        load_synonyms("counter-fitted")
    assert not list((tmp_path / "synonyms").glob("*.json"))  # nothing cached


def test_synonym_source_labels_name_substitutes():
    from study.data.augment import synonym_source_label

    assert synonym_source_label("roget") == "roget (offline substitute for counter-fitted)"
    assert synonym_source_label("/data/neighbours.json.gz") == "file neighbours.json.gz (in place of counter-fitted)"


def test_unknown_matching_is_a_clear_error():
    with pytest.raises(StudyError, match="synonym_matching='fuzzy' is invalid: choose one of words, exact"):
        load_synonyms("roget", "fuzzy")
