"""What a VLM run answers, question type by question type, against what the question alone allows.

    python scripts/vlm_diagnose.py logs/vlm/runs/RUN [--types count yesno]

For every question type of the run's held-out questions it prints:
- the answers' distribution (how often each true answer occurs);
- the blind ceiling: the accuracy of answering each held-out question with the answer its question text had most
  often in the training questions (the best a model that ignores the image can do; the blind baseline's target);
- the accuracy of the image-conditioned model (`instruct`) and of the blind baseline (`blind`) when the run has it;
- the confusion of true against predicted answers of the image-conditioned model (rows: truth), for types with few
  answers, so one sees e.g. whether a model answers "1" to every count.

It reads the run's stage checkpoints (`<run>/instruct/checkpoints/last.ckpt`, `<run>/blind/...`), whose recipe names
the held-out questions; the training questions are the `train.json` beside them.
"""

import argparse
import os
from collections import Counter

from clip_train.vlm.answers import normalize_answer
from clip_train.vlm.assistant import load_vlm
from clip_train.vlm.blind_ceiling import blind_ceiling
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.vqa import answer

MAX_CONFUSION_ANSWERS = 10


def predictions(checkpoint: str, turns: list, batch_size: int) -> list[str]:
    assistant = load_vlm(checkpoint)
    preprocess = None if assistant.model.blind else assistant.preprocess
    out = []
    for start in range(0, len(turns), batch_size):
        chunk = [(image, turn.question) for image, turn in turns[start : start + batch_size]]
        out += [normalize_answer(text) for text in answer(assistant.model, assistant.tokenizer, chunk, preprocess)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a python -m clip_train.vlm run folder")
    parser.add_argument("--types", nargs="*", default=None, help="question types to show (default: all)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    instruct = os.path.join(args.run, "instruct", "checkpoints", "last.ckpt")
    blind = os.path.join(args.run, "blind", "checkpoints", "last.ckpt")
    recipe = load_vlm(instruct).recipe
    test_file = recipe["test_questions"]
    test = [(c.image, c.turns[0]) for c in read_conversations(ConversationSource.of(test_file, "test"))[0]]
    train_file = os.path.join(os.path.dirname(test_file), "train.json")
    train = [c.turns[0] for c in read_conversations(ConversationSource.of(train_file, "train"), with_image=False)[0]]
    ceilings = blind_ceiling(train, [turn for _, turn in test])
    seen = predictions(instruct, test, args.batch_size)
    unseen = predictions(blind, test, args.batch_size) if os.path.isfile(blind) else None
    kinds = sorted({turn.kind for _, turn in test} & set(args.types or [turn.kind for _, turn in test]))
    for kind in kinds:
        rows = [i for i, (_, turn) in enumerate(test) if turn.kind == kind]
        truth = [normalize_answer(test[i][1].answer) for i in rows]
        accuracy = sum(seen[i] == t for i, t in zip(rows, truth)) / len(rows)
        line = f"## {kind}: {len(rows)} questions; image {accuracy:.3f}"
        if unseen is not None:
            line += f", blind {sum(unseen[i] == t for i, t in zip(rows, truth)) / len(rows):.3f}"
        print(f"{line}, blind ceiling {ceilings[kind]:.3f}")
        distribution = Counter(truth)
        print("answers: " + ", ".join(f"{a} {n / len(rows):.2f}" for a, n in distribution.most_common()))
        if len(distribution) <= MAX_CONFUSION_ANSWERS:
            answers = sorted(distribution)
            predicted = sorted({seen[i] for i in rows})
            print("| truth \\ image model | " + " | ".join(predicted) + " |")
            print("| --- " * (len(predicted) + 1) + "|")
            pairs = Counter((t, seen[i]) for i, t in zip(rows, truth))
            for a in answers:
                print(f"| {a} | " + " | ".join(str(pairs[a, p]) for p in predicted) + " |")
        print()


if __name__ == "__main__":
    main()
