"""ARO's order perturbations of a caption, written from the published rules (Yuksekgonul et al., ICLR 2023,
section 3 and `dataset_zoo/perturbations.py` of github.com/mertyg/vision-language-models-are-bows), not copied.

The COCO and Flickr30k order sets score each test caption against four perturbations of it:

- `shuffle_nouns_and_adjectives`: the nouns (Penn tags NN, NNS, NNP, NNPS) trade places among themselves, and
  so do the adjectives (JJ, JJR, JJS);
- `shuffle_all_but_nouns_and_adjectives`: every other token trades places, nouns and adjectives stay;
- `shuffle_within_trigrams`: the tokens are cut into consecutive trigrams (the last may be shorter), and each
  trigram's tokens are shuffled;
- `shuffle_trigrams`: the trigrams are shuffled as wholes;

tokens joined by single spaces, then the caption and each perturbation cleaned by `pre_caption` (lower case;
`.!"()*#:;~` to spaces; runs of spaces to one; at most `max_words` words), as ARO's `dataset_zoo/retrieval.py`
does. Differences from ARO's code, said here because they move the numbers a little:

- ARO tags parts of speech with spaCy's `en_core_web_sm`; this module takes any tagger (text -> [(token, Penn
  tag)]) and by default loads the same spaCy pipeline when spaCy is installed (it is not a dependency);
- ARO tokenizes the trigram perturbations with NLTK's `word_tokenize`; `word_tokens` below is a regular
  expression close to it (words, hyphenated words, contractions' `'s`/`n't` and punctuation split off);
- ARO draws from the global NumPy and `random` generators seeded once; here each caption's shuffles come from
  a generator seeded by the caption's key, so every rank and every run draws the same perturbations.
"""

import random
import re
from collections.abc import Callable, Sequence

Tagger = Callable[[str], Sequence[tuple[str, str]]]  # text -> [(token, Penn Treebank tag)]
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+(?:-\w+)*|[^\w\s]")


def pre_caption(caption: str, max_words: int) -> str:
    """ARO's caption cleaning: lower case, `.!"()*#:;~` to spaces, single spaces, stripped, first `max_words` words."""
    caption = re.sub(r"\s{2,}", " ", re.sub(r"[.!\"()*#:;~]", " ", caption.lower())).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


def word_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _shuffle_positions(tokens: list[str], positions: list[int], rng: random.Random) -> None:
    """Shuffle the tokens at `positions` among those positions, in place."""
    moved = [tokens[p] for p in positions]
    rng.shuffle(moved)
    for p, token in zip(positions, moved):
        tokens[p] = token


def shuffle_nouns_and_adjectives(tagged: Sequence[tuple[str, str]], rng: random.Random) -> str:
    tokens = [token for token, _ in tagged]
    _shuffle_positions(tokens, [i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS], rng)
    _shuffle_positions(tokens, [i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS], rng)
    return " ".join(tokens)


def shuffle_all_but_nouns_and_adjectives(tagged: Sequence[tuple[str, str]], rng: random.Random) -> str:
    tokens = [token for token, _ in tagged]
    kept = NOUN_TAGS | ADJECTIVE_TAGS
    _shuffle_positions(tokens, [i for i, (_, tag) in enumerate(tagged) if tag not in kept], rng)
    return " ".join(tokens)


def trigrams(tokens: Sequence[str]) -> list[list[str]]:
    """Consecutive groups of three tokens; the last holds the one or two left over."""
    return [list(tokens[start : start + 3]) for start in range(0, len(tokens), 3)]


def shuffle_within_trigrams(text: str, rng: random.Random) -> str:
    groups = trigrams(word_tokens(text))
    for group in groups:
        rng.shuffle(group)
    return " ".join(" ".join(group) for group in groups)


def shuffle_trigrams(text: str, rng: random.Random) -> str:
    groups = trigrams(word_tokens(text))
    rng.shuffle(groups)
    return " ".join(" ".join(group) for group in groups)


def order_options(caption: str, tagger: Tagger, key: str, max_words: int) -> list[str]:
    """[the cleaned caption, its four cleaned perturbations in the order above]; `key` seeds the shuffles."""
    tagged = list(tagger(caption))
    rng = random.Random(f"aro-order/{key}")
    perturbed = [
        shuffle_nouns_and_adjectives(tagged, rng),
        shuffle_all_but_nouns_and_adjectives(tagged, rng),
        shuffle_within_trigrams(caption, rng),
        shuffle_trigrams(caption, rng),
    ]
    return [pre_caption(text, max_words) for text in (caption, *perturbed)]


def spacy_tagger(pipeline: str) -> Tagger:
    """The spaCy pipeline `pipeline` (ARO uses en_core_web_sm) as a tagger; a clear error when spaCy or it is absent."""
    try:
        import spacy

        nlp = spacy.load(pipeline)
    except (ImportError, OSError) as error:
        raise RuntimeError(
            f"ARO's COCO and Flickr order sets tag nouns and adjectives with the spaCy pipeline {pipeline!r}, which "
            f"cannot be loaded ({error}). Install spaCy and the pipeline (pip install spacy; python -m spacy download "
            f"{pipeline}), or leave coco_root and flickr_root unset"
        ) from error
    return lambda text: [(token.text, token.tag_) for token in nlp(text)]
