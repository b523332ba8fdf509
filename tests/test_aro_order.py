"""ARO's order perturbations, re-implemented from the published rules: each rule checked on hand-made captions."""

import itertools
import random

import pytest

from clip_train.eval.aro_order import (
    order_options,
    pre_caption,
    shuffle_all_but_nouns_and_adjectives,
    shuffle_nouns_and_adjectives,
    shuffle_trigrams,
    shuffle_within_trigrams,
    trigrams,
    word_tokens,
)

TAGGED = [("a", "DT"), ("brown", "JJ"), ("dog", "NN"), ("chases", "VBZ"), ("the", "DT"), ("small", "JJ"),
          ("white", "JJ"), ("cats", "NNS"), ("near", "IN"), ("Paris", "NNP")]  # fmt: skip
NOUNS, ADJECTIVES = {2, 7, 9}, {1, 5, 6}


def _each_seed(function, *args) -> list[list[str]]:
    return [function(*args, random.Random(seed)).split(" ") for seed in range(40)]


def test_nouns_and_adjectives_trade_places_among_themselves_only():
    words = [token for token, _ in TAGGED]
    outputs = _each_seed(shuffle_nouns_and_adjectives, TAGGED)
    for out in outputs:
        assert [out[i] for i in range(10) if i not in NOUNS | ADJECTIVES] == [
            words[i] for i in range(10) if i not in NOUNS | ADJECTIVES
        ]
        assert sorted(out[i] for i in NOUNS) == ["Paris", "cats", "dog"]
        assert sorted(out[i] for i in ADJECTIVES) == ["brown", "small", "white"]
    assert len({" ".join(out[i] for i in sorted(NOUNS)) for out in outputs}) == 6  # every order of 3 nouns drawn


def test_all_but_nouns_and_adjectives_trade_places():
    words = [token for token, _ in TAGGED]
    outputs = _each_seed(shuffle_all_but_nouns_and_adjectives, TAGGED)
    others = [i for i in range(10) if i not in NOUNS | ADJECTIVES]
    for out in outputs:
        assert [out[i] for i in sorted(NOUNS | ADJECTIVES)] == [words[i] for i in sorted(NOUNS | ADJECTIVES)]
        assert sorted(out[i] for i in others) == sorted(words[i] for i in others)
    assert len({tuple(out) for out in outputs}) > 10


def test_trigrams_are_consecutive_threes_and_shuffle_within_or_as_wholes():
    assert trigrams(list("abcdefg")) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    text = "one two three four five six seven eight"
    groups = trigrams(text.split())
    for out in _each_seed(shuffle_within_trigrams, text):
        assert [sorted(group) for group in trigrams(out)] == [sorted(group) for group in groups]
    whole_orders = {" ".join(" ".join(group) for group in order) for order in itertools.permutations(groups)}
    drawn = {" ".join(out) for out in _each_seed(shuffle_trigrams, text)}
    assert drawn == whole_orders  # the 6 orders of the 3 trigrams, each kept whole


def test_tokens_and_caption_cleaning_as_aro_has_them():
    assert word_tokens("A man's dog doesn't eat well-cooked food, quickly.") == [
        "A", "man", "'s", "dog", "does", "n't", "eat", "well-cooked", "food", ",", "quickly", ".",
    ]  # fmt: skip
    assert pre_caption('A Man (left) rides:  a "horse"!  ', 30) == "a man left rides a horse"
    assert pre_caption("one two three four", 3) == "one two three"


def test_order_options_are_the_cleaned_caption_and_its_four_perturbations():
    def tagger(text):
        return [(token, dict(TAGGED).get(token, "DT")) for token in text.split(" ")]

    caption = " ".join(token for token, _ in TAGGED)
    options = order_options(caption + ".", tagger, "key", 30)
    assert options == order_options(caption + ".", tagger, "key", 30)  # the key fixes the draw
    assert options[0] == pre_caption(caption, 30) and len(options) == 5
    assert all(sorted(option.split()) == sorted(options[0].split()) for option in options[1:])
    assert len(set(options)) == 5
    with pytest.raises(RuntimeError, match="spaCy pipeline 'no_such_pipeline'"):
        from clip_train.eval.aro_order import spacy_tagger

        spacy_tagger("no_such_pipeline")
