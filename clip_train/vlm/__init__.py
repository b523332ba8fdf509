"""A LLaVA-style vision-language stage on clip_train's image towers (docs/vlm.md).

    python -m clip_train.vlm vision.checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt

questions.py / conversations.py   the embedded world's Q/A in LLaVA's conversation JSON
text.py / language_model.py       tokenizer, answer-only labels, the causal LM
tower.py                          the CLIP image tower and preprocessing, and the recipe a stage carries to rebuild them
vision.py / connector.py / model.py   tower tokens -> MLP -> spliced at <image>
conversation_source.py            the user's conversations (LLaVA JSON, JSONL, tables, datasets, tar shards) as units
conversation_stream.py / data.py / module.py / stages.py   exactly-once, resumable batches; the LightningModule; a stage
answers.py / vqa.py               VQAv2 normalisation, accuracy per question type, grounding IoU
eval_task.py                      those scores as a `python -m clip_train.evaluate` task (eval/task=vlm)
hf_llava.py                       a stage as transformers' LlavaForConditionalGeneration (`export format=hf`)
run.py / __main__.py              the command
"""
