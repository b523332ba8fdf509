"""A LLaVA-style vision-language stage on clip_train's image towers (docs/vlm.md).

    python -m clip_train.vlm vision.checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt

questions.py / conversations.py   the embedded world's Q/A in LLaVA's conversation JSON
text.py / language_model.py       tokenizer, answer-only labels, the causal LM
vision.py / connector.py / model.py   tower tokens -> MLP -> spliced at <image>
data.py / sampler.py / module.py / stages.py   batches in a resumable order, the LightningModule, a stage
answers.py / vqa.py               VQAv2 normalisation, accuracy per question type, grounding IoU
run.py / __main__.py              the command
"""
