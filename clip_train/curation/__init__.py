"""Curating a set of image-text pairs with a trained model: score, filter, deduplicate, balance, write.

    scoring.py     CLIP score (cosine of image and caption embeddings) and image embedding of every pair, one
                   file per unit, so a rerun skips what is scored
    selection.py   keep a top fraction or pairs above a threshold (DataComp's CLIP-score baseline); drop near-duplicate
                   images, keeping the higher-scored one
    balancing.py   MetaCLIP's balancing: cap each metadata entry's matches at t by sampling
    output.py      the kept pairs as tar shards, the scores in each sample's JSON
    report.py      counts at each stage, the score histogram (PNG), per-entry counts
    curate_set.py  the stages in order, from units to the output folder

`python -m clip_train.curate` is the command (`clip_train/curate.py`).
"""
