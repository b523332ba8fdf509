"""Text hard negatives in the contrastive objectives (NegCLIP): k false captions per image, scored only against it.

Each image row i gets k extra columns, the cosines with its own negative captions; no other image
sees them and no gather is needed, since they belong to the rank (and micro-batch) of their image.
InfoNCE appends them to the image→text logits (the text→image direction has no image for them);
SigLIP counts each as one more non-matching pair. Slots a caption could not fill
(`negative_valid` false) take no part. The model encodes them in its training forward
(`DualEncoder.encode_negatives`); the objectives only score them.
"""

import torch

from clip_train.model.outputs import TrainingOutputs


def checked_negatives(outputs: TrainingOutputs, k: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The outputs' (B, k, D) negatives' text features and (B, k) validity, or (None, None) when k is 0.

    k: the number of negatives the objective was configured for; a batch with none, or with another
    number, is refused, since the data workers and the objective disagree about the setting.
    """
    negatives, valid = outputs.negative_text_features, outputs.negative_valid
    if negatives is None:
        if k:
            raise ValueError(
                f"loss.text_hard_negatives={k} but the batch has no hard negatives: data.text_hard_negatives must be {k}"
            )
        return None, None
    rows = outputs.image_features.shape[0]
    if negatives.shape[:2] != (rows, k) or valid.shape != (rows, k):
        raise ValueError(
            f"the batch brings {tuple(negatives.shape[:2])} text hard negatives (rows, k) for "
            f"{rows} images, but the loss expects k={k}: set loss.text_hard_negatives and let "
            "data.text_hard_negatives follow it"
        )
    return negatives, valid


def negative_cosines(image_features: torch.Tensor, negative_text_features: torch.Tensor) -> torch.Tensor:
    """(B, D) images, (B, k, D) their negatives' text features -> (B, k) cosines, in the images' dtype."""
    return torch.einsum("bd,bkd->bk", image_features, negative_text_features.to(image_features.dtype))
