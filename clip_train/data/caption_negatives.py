"""Hard-negative captions from the caption text alone, by rule: word lists, no parser, no model.

Each kind rewrites a caption into a false one that keeps (almost) every word, so a model that
reads captions as bags of words cannot tell them apart (Yuksekgonul et al., ICLR 2023):

    swap_attributes  the first two different colour words exchanged    a red circle above a blue square
                                                                        -> a blue circle above a red square
    relation         the first spatial word replaced by its opposite    to the left of -> to the right of
                     (left/right, above/below, top/bottom, over/under,
                     upper/lower, inside/outside, up/down, before/after);
                     a caption without one: its first two noun phrases
                     exchanged (NegCLIP's relation swap)                a dog chasing a cat -> a cat chasing a dog
    word_order       the words shuffled                                 circle a red above ...
    colour           one colour word replaced by a colour absent from the caption
    shape            one shape word replaced by another shape (plural kept)
    count            one number word (one ... ten) replaced by its neighbour (two -> one or three)

The word lists are short on purpose: the eleven basic colour terms (grey spelt both ways), the
embedded scenes' five shapes (web captions name objects, which no word list covers) and the
numbers one to ten. A replacement should be a word true captions use too; a rare word would give
the negative away without teaching anything about the image. A noun phrase here is a determiner
or number word and the words after it up to the next determiner, number, preposition,
conjunction, spatial word, -ing word or punctuation
("a small red circle", "the dog"). A kind with nothing to act on returns None. The rules are
exact on the embedded scenes' captions (every colour, shape, count and relation word is
listed); on web captions they can now and then produce a caption that is still true ("a red
and blue flag" with its colours swapped), which costs a little signal, not correctness.
"""

import random
import re
from collections.abc import Sequence

COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray", "grey")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses", "diamond": "diamonds"}
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SPATIAL_OPPOSITES = {
    "left": "right", "above": "below", "top": "bottom", "over": "under", "upper": "lower", "inside": "outside",
    "up": "down", "before": "after",
}  # fmt: skip
SPATIAL_OPPOSITES |= {b: a for a, b in SPATIAL_OPPOSITES.items()}
DETERMINERS = ("a", "an", "the", "this", "that", "some", "his", "her", "its", "their", *NUMBER_WORDS)
PHRASE_STOPS = (
    "of", "to", "in", "on", "at", "with", "near", "next", "by", "from", "behind", "beside", "and", "or", "while",
    "is", "are", "has", "have",
)  # fmt: skip
KINDS = ("swap_attributes", "relation", "word_order", "colour", "shape", "count")

_SHAPE_FORMS = {form: shape for shape, plural in SHAPE_PLURALS.items() for form in (shape, plural)}
_TOKENS = re.compile(r"[A-Za-z]+|[^A-Za-z]+")


def _tokens(caption: str) -> list[str]:
    """Words and the runs of other characters between them, so that joining them gives the caption back."""
    return _TOKENS.findall(caption)


def _words(tokens: list[str]) -> list[int]:
    """Indices of the word tokens."""
    return [i for i, token in enumerate(tokens) if token[0].isalpha()]


def _set(tokens: list[str], index: int, word: str) -> None:
    """Put `word` at token `index`, capitalised like the word it replaces."""
    tokens[index] = word.capitalize() if tokens[index][0].isupper() else word


def _swap_attributes(tokens: list[str], rng: random.Random) -> str | None:
    colours = [i for i in _words(tokens) if tokens[i].lower() in COLOUR_WORDS]
    other = next((j for j in colours[1:] if tokens[j].lower() != tokens[colours[0]].lower()), None)
    if other is None:
        return None
    first, second = tokens[colours[0]].lower(), tokens[other].lower()
    _set(tokens, colours[0], second)
    _set(tokens, other, first)
    return "".join(tokens)


def _noun_phrases(tokens: list[str]) -> list[tuple[int, int]]:
    """(first, last) token indices of the noun phrases, by the rule in the module docstring."""
    phrases, words = [], _words(tokens)
    for n, i in enumerate(words):
        if tokens[i].lower() not in DETERMINERS:
            continue
        last = i
        for j in words[n + 1 :]:
            word = tokens[j].lower()
            between = "".join(tokens[last + 1 : j])
            stop = word in DETERMINERS or word in PHRASE_STOPS or word in SPATIAL_OPPOSITES or word.endswith("ing")
            if stop or between.strip():  # punctuation ends a phrase too
                break
            last = j
        if last > i:
            phrases.append((i, last))
    return phrases


def _relation(tokens: list[str], rng: random.Random) -> str | None:
    spatial = next((i for i in _words(tokens) if tokens[i].lower() in SPATIAL_OPPOSITES), None)
    if spatial is not None:
        _set(tokens, spatial, SPATIAL_OPPOSITES[tokens[spatial].lower()])
        return "".join(tokens)
    phrases = _noun_phrases(tokens)
    if len(phrases) < 2:
        return None
    (a, a_end), (b, b_end) = phrases[:2]
    first, second = "".join(tokens[a : a_end + 1]), "".join(tokens[b : b_end + 1])
    if first.lower() == second.lower():
        return None
    return "".join(tokens[:a]) + second + "".join(tokens[a_end + 1 : b]) + first + "".join(tokens[b_end + 1 :])


def _word_order(tokens: list[str], rng: random.Random) -> str | None:
    words = [tokens[i] for i in _words(tokens)]
    if len({w.lower() for w in words}) < 2:
        return None
    shuffled = list(words)
    while [w.lower() for w in shuffled] == [w.lower() for w in words]:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def _colour(tokens: list[str], rng: random.Random) -> str | None:
    colours = [i for i in _words(tokens) if tokens[i].lower() in COLOUR_WORDS]
    if not colours:
        return None
    present = {tokens[i].lower() for i in colours}
    if present & {"gray", "grey"}:  # one colour, two spellings
        present |= {"gray", "grey"}
    _set(tokens, rng.choice(colours), rng.choice([c for c in COLOUR_WORDS if c not in present]))
    return "".join(tokens)


def _shape(tokens: list[str], rng: random.Random) -> str | None:
    shapes = [i for i in _words(tokens) if tokens[i].lower() in _SHAPE_FORMS]
    if not shapes:
        return None
    index = rng.choice(shapes)
    word = tokens[index].lower()
    shape = _SHAPE_FORMS[word]
    other = rng.choice([s for s in SHAPE_PLURALS if s != shape])
    _set(tokens, index, SHAPE_PLURALS[other] if word != shape else other)
    return "".join(tokens)


def _count(tokens: list[str], rng: random.Random) -> str | None:
    numbers = [i for i in _words(tokens) if tokens[i].lower() in NUMBER_WORDS]
    if not numbers:
        return None
    index = rng.choice(numbers)
    n = NUMBER_WORDS.index(tokens[index].lower())
    _set(tokens, index, NUMBER_WORDS[rng.choice([m for m in (n - 1, n + 1) if 0 <= m < len(NUMBER_WORDS)])])
    return "".join(tokens)


_RULES = {
    "swap_attributes": _swap_attributes,
    "relation": _relation,
    "word_order": _word_order,
    "colour": _colour,
    "shape": _shape,
    "count": _count,
}


def perturb(caption: str, kind: str, rng: random.Random) -> str | None:
    """`caption` made false by the rule of `kind` (see the module docstring), or None if the rule finds nothing."""
    if kind not in _RULES:
        raise ValueError(f"no hard-negative kind {kind!r}; there are {', '.join(KINDS)}")
    negative = _RULES[kind](_tokens(caption), rng)
    return None if negative is None or negative.lower() == caption.lower() else negative


def hard_negatives(caption: str, k: int, rng: random.Random, kinds: Sequence[str] = KINDS) -> list[str]:
    """Up to `k` different false captions: kinds drawn in a random order among `kinds`, each used once while
    unused ones are left, then again (colour, shape, count and word order draw differently each time).
    Fewer than `k` when the caption allows fewer."""
    negatives, order = [], []
    for _ in range(4 * k):  # a few draws more than needed: some repeat an earlier negative
        if len(negatives) == k:
            break
        if not order:
            order = rng.sample(list(kinds), len(kinds))
        negative = perturb(caption, order.pop(), rng)
        if negative is not None and negative not in negatives:
            negatives.append(negative)
    return negatives
