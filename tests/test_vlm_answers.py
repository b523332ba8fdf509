"""VQAv2's answer normalisation and accuracy, on hand-worked cases; grounding's IoU on hand boxes; scores per type."""

import pytest
from PIL import Image
from tiny_vlm import tiny_vlm

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.vlm import vqa
from clip_train.vlm.answers import normalize_answer, vqa_accuracy
from clip_train.vlm.blind_ceiling import blind_ceiling, question_only_answers
from clip_train.vlm.conversations import Conversation, Turn
from clip_train.vlm.vqa import box_from_tokens, evaluate_questions, iou, score


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("Two", "2"),
        ("two.", "2"),
        ("The Red", "red"),
        ("a circle!", "circle"),
        ("  Yes  ", "yes"),
        ("dont know", "don't know"),
        ("3.5", "3.5"),  # a full stop before a digit stays
        ("left-hand", "left hand"),  # a hyphen inside a word becomes a space
        ("red , blue", "red blue"),  # a comma beside a space goes
        ("1,000", "1000"),  # a comma between digits goes
        ("None", "0"),
        ("an Apple\n", "apple"),
    ],
)
def test_normalisation_by_hand(raw, normal):
    assert normalize_answer(raw) == normal


def test_one_reference_is_exact_match_after_normalisation():
    assert vqa_accuracy("Two.", ["2"]) == 1.0
    assert vqa_accuracy("three", ["2"]) == 0.0


def test_ten_references_score_min_one_third_of_matches_over_leave_one_out():
    # 2 of 10 say "red": each left-out subset of 9 holds 2 matches (8 subsets) or 1 (2 subsets)
    references = ["red"] * 2 + ["pink"] * 8
    assert vqa_accuracy("Red", references) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    assert vqa_accuracy("red", ["red"] * 3 + ["pink"] * 7) == pytest.approx((7 * 1.0 + 3 * 2 / 3) / 10)
    assert vqa_accuracy("red", ["red"] * 4 + ["pink"] * 6) == 1.0
    with pytest.raises(ValueError, match="reference"):
        vqa_accuracy("red", [])


def test_grounding_scores_iou_of_location_boxes():
    assert box_from_tokens("<loc_100> <loc_200><loc_300> <loc_400>") == (0.1, 0.2, 0.3, 0.4)
    assert box_from_tokens("<loc_100><loc_200>") is None
    assert iou((0.0, 0.0, 0.2, 0.2), (0.1, 0.0, 0.3, 0.2)) == pytest.approx(0.02 / 0.06)
    reference = "<loc_0><loc_0><loc_200><loc_200>"
    assert score("grounding", "<loc_0><loc_0><loc_200><loc_150>", reference) == 1.0  # IoU 0.75
    assert score("grounding", "<loc_100><loc_0><loc_300><loc_200>", reference) == 0.0  # IoU 1/3
    assert score("grounding", "red", reference) == 0.0


def test_scores_per_type_are_the_mean_of_each_questions_score(tmp_path):
    """On a tiny random VLM, answers batched (3 a batch, left-padded) score as answered one at a time: a type's
    metric is the mean over its questions, `vqa/mean` the mean over the VQA types, grounding reported apart."""
    model, tokenizer = tiny_vlm(["what color is the square?", "red", "give the box of the square.", "how many", "2"])
    model.eval()
    preprocess = eval_transform(32, CLIP_MEAN, CLIP_STD)
    asked = [
        ("color", "what color is the square?", "red"),
        ("color", "what color is the square?", "blue"),
        ("count", "how many squares?", "2"),
        ("grounding", "give the box of the square.", "<loc_0><loc_0><loc_500><loc_500>"),
    ]
    conversations = []
    for index, (kind, question, answer) in enumerate(asked):
        Image.new("RGB", (32, 32), (200, 30 * index, 30)).save(tmp_path / f"{index}.png")
        conversations.append(Conversation(str(tmp_path / f"{index}.png"), (Turn(question, answer, kind),)))
    predicted = [vqa.answer(model, tokenizer, [(c.image, c.turns[0].question)], preprocess)[0] for c in conversations]
    # the first colour and the count are answered as the model answers them alone, the second colour never is
    answers = [predicted[0], predicted[1] + " never", predicted[2], asked[3][2]]
    conversations = [
        Conversation(c.image, (Turn(c.turns[0].question, a, c.turns[0].kind),)) for c, a in zip(conversations, answers)
    ]
    metrics = evaluate_questions(model, tokenizer, conversations, preprocess, batch_size=3)
    grounded = score("grounding", predicted[3], asked[3][2])
    assert metrics == pytest.approx({"vqa/color": 0.5, "vqa/count": 1.0, "vqa/mean": 0.75, "grounding/acc@0.5": grounded})


def test_the_blind_ceiling_answers_each_wording_as_training_did_most_often():
    train = [Turn("how many squares?", "1", "count")] * 3 + [Turn("how many squares?", "Two.", "count")] * 2
    train += [Turn("how many red objects?", "2", "count")] * 2 + [Turn("is there a circle?", "no", "yesno")]
    test = [
        Turn("how many squares?", "1", "count"),  # most often 1: right
        Turn("how many squares?", "2", "count"),  # wrong
        Turn("how many red objects?", "two", "count"),  # 2, normalised: right
        Turn("how many circles?", "1", "count"),  # unseen wording: the commonest count answer, 2 (4 of 7): wrong
        Turn("is there a square?", "yes", "yesno"),  # unseen: "no", wrong
    ]
    assert question_only_answers(train, test) == ["1", "1", "2", "2", "no"]
    assert blind_ceiling(train, test) == {"count": 2 / 4, "yesno": 0.0}
