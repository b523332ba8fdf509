"""VQAv2's answer normalisation and accuracy, so that "Two." and "2" score alike, as VQA papers count them.

The rules are those of the VQAv2 evaluation (Antol et al. 2015; Goyal et al. 2017): lower case; punctuation
dropped where it touches a space (or a comma between digits), turned into a space elsewhere; a full stop kept
only before a digit ("2.5"; the official script's rule); number words zero..ten as digits; the articles a, an,
the dropped; apostrophe-less contractions given their apostrophe. Accuracy against ten human answers is
min(1, matches / 3), averaged over the ten leave-one-out subsets of nine; against one reference answer this
is exact match.
"""

import re

PUNCTUATION = set(";/[]\"{}()=+\\_-><@`,?!*#%^&$'|~:")
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = {"a", "an", "the"}
CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                "wont": "won't", "didnt": "didn't", "wasnt": "wasn't", "werent": "weren't", "shouldnt": "shouldn't",
                "couldnt": "couldn't", "wouldnt": "wouldn't", "hasnt": "hasn't", "havent": "haven't",
                "its": "it's", "im": "i'm", "ive": "i've", "youre": "you're", "theyre": "they're", "whats": "what's",
                "thats": "that's", "theres": "there's", "lets": "let's"}  # fmt: skip
COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
FULL_STOP_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def _punctuation(text: str) -> str:
    for mark in PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or COMMA_IN_NUMBER.search(text):
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    return FULL_STOP_NOT_BEFORE_DIGIT.sub("", text)


def normalize_answer(answer: str) -> str:
    """An answer as VQAv2 compares it: "The Two." -> "2", "Dont know" -> "don't know"."""
    text = _punctuation(answer.replace("\n", " ").replace("\t", " ").strip().lower())
    words = [NUMBERS.get(word, word) for word in text.split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def vqa_accuracy(prediction: str, references: list[str]) -> float:
    """VQAv2's accuracy of one prediction against the human answers `references` (one or ten)."""
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    predicted = normalize_answer(prediction)
    answers = [normalize_answer(reference) for reference in references]
    if len(answers) == 1:
        return float(predicted == answers[0])
    scores = []
    for left_out in range(len(answers)):
        others = answers[:left_out] + answers[left_out + 1 :]
        scores.append(min(1.0, sum(answer == predicted for answer in others) / 3))
    return sum(scores) / len(scores)
