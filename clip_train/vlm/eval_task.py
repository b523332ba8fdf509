"""The VLM's scores as an evaluation task of `python -m clip_train.evaluate` (`configs/eval/task/vlm.yaml`).

    python -m clip_train.evaluate checkpoint=CLIP_CKPT eval=none '~eval.tasks.retrieval' \
        +eval/task@eval.tasks.vlm=vlm eval.tasks.vlm.checkpoint=logs/vlm/runs/RUN

reports `vlm/vqa/<type>`, `vlm/vqa/mean` (and `vlm/grounding/acc@0.5` when the questions hold grounding ones) of
the VLM stage checkpoint, or of a `python -m clip_train.vlm` run folder's `instruct` stage, and with a run folder
whose blind baseline was trained also `vlm/blind/vqa/<type>`, ... The VLM carries its own image tower (its weights
and recipe, `clip_train.vlm.tower`), so the CLIP model the evaluation loads is not what answers: the task sits
beside the CLIP tasks so that one command and one table report both.
"""

import os

from clip_train.inference import ClipModel
from clip_train.vlm.assistant import load_vlm
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.vqa import evaluate_questions

STAGE_CHECKPOINT = os.path.join("checkpoints", "last.ckpt")


def stage_checkpoints(path: str) -> dict[str, str]:
    """{metric prefix: stage checkpoint}: {"": path} for a checkpoint; for a run folder its instruct stage, and its
    blind baseline as "blind/" when it has one."""
    if not os.path.isdir(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"eval.tasks...checkpoint={path} does not exist")
        return {"": path}
    found = {prefix: os.path.join(path, stage, STAGE_CHECKPOINT) for prefix, stage in (("", "instruct"), ("blind/", "blind"))}
    if not os.path.isfile(found[""]):
        raise ValueError(f"{path} is not a clip_train.vlm run folder: it has no instruct/{STAGE_CHECKPOINT}")
    return {prefix: checkpoint for prefix, checkpoint in found.items() if os.path.isfile(checkpoint)}


class VisionLanguageTask:
    """checkpoint: a VLM stage checkpoint or a `python -m clip_train.vlm` run folder.
    questions: a LLaVA JSON file whose records name their question type (`question_types`); null: the held-out
        questions the stage was trained beside (their path is in the stage checkpoint's recipe).
    batch_size: questions answered (greedily, left-padded) at once."""

    def __init__(self, checkpoint: str | None, questions: str | None = None, batch_size: int = 64):
        if checkpoint is None:
            raise ValueError("eval.tasks.<path>.checkpoint is required: a VLM stage checkpoint or a clip_train.vlm run folder")
        self.checkpoints = stage_checkpoints(checkpoint)
        self.questions, self.batch_size = questions, batch_size

    def _questions_file(self, checkpoint: str, recipe: dict) -> str:
        path = self.questions or recipe.get("test_questions")
        if path is None:
            raise ValueError(f"{checkpoint} does not record its held-out questions: set the task's `questions`")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the VLM questions {path} are gone: set the task's `questions` to a LLaVA JSON file")
        return path

    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """Each stage's scores on the questions; `model` (the evaluation's CLIP model) is not used: see the module."""
        metrics = {}
        for prefix, checkpoint in self.checkpoints.items():
            vlm = load_vlm(checkpoint, device=model.device)
            conversations, _ = read_conversations(
                ConversationSource.of(self._questions_file(checkpoint, vlm.recipe), "questions")
            )
            preprocess = None if vlm.model.blind else vlm.preprocess
            metrics |= evaluate_questions(vlm.model, vlm.tokenizer, conversations, preprocess, self.batch_size, prefix)
        return metrics
