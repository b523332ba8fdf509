"""The blind ceiling: the accuracy of answering each held-out question from its wording alone, as training taught.

A question-only model can at best give, to each question text, the answer that text had most often in training.
Where the held-out texts each occur often in training (the embedded count questions: 13 texts, yes/no: 40) this is
the ceiling a blind baseline reaches (the default run's `blind/vqa/count` is exactly it, 0.553 on 3 seeds), computed
from the data alone, so a learning test can hold the image-conditioned model against it without training the blind
model. Where texts are rare (position questions name two groups) an unseen text falls back to the commonest answer
of its type, and a blind model that reads the wording ("above or below") beats this estimate.
"""

from collections import Counter, defaultdict

from clip_train.vlm.answers import normalize_answer
from clip_train.vlm.conversations import Turn


def question_only_answers(train: list[Turn], test: list[Turn]) -> list[str]:
    """For each test turn, the normalised answer its question text had most often among the training turns (ties:
    the answer met first), else the commonest answer of its type."""
    by_question, by_kind = defaultdict(Counter), defaultdict(Counter)
    for turn in train:
        by_question[turn.question][normalize_answer(turn.answer)] += 1
        by_kind[turn.kind][normalize_answer(turn.answer)] += 1
    return [(by_question.get(turn.question) or by_kind[turn.kind]).most_common(1)[0][0] for turn in test]


def blind_ceiling(train: list[Turn], test: list[Turn]) -> dict[str, float]:
    """{question type: the share of its test turns whose normalised answer the question alone gives}."""
    guesses = question_only_answers(train, test)
    right, total = Counter(), Counter()
    for turn, guess in zip(test, guesses):
        total[turn.kind] += 1
        right[turn.kind] += guess == normalize_answer(turn.answer)
    return {kind: right[kind] / total[kind] for kind in total}
