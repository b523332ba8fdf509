"""Text hard negatives in the contrastive losses (NegCLIP): k false captions per image, scored only against it.

Each image row i gets k extra columns, the cosines with its own negative captions; no other image
sees them and no gather is needed, since they belong to the rank (and micro-batch) of their image.
InfoNCE appends them to the image→text logits (the text→image direction has no image for them);
SigLIP counts each as one more non-matching pair. Slots a caption could not fill
(`negative_valid` false) take no part.
"""

import torch


def negative_cosines(
    image_features: torch.Tensor, negative_text_features: torch.Tensor, negative_valid: torch.Tensor, k: int
) -> torch.Tensor:
    """(B, D) images, (B, k, D) their negatives' text features, (B, k) bool -> (B, k) cosines.

    k: the number of negatives the loss was configured for; a batch with another number is refused,
    since the data workers and the loss disagree about the setting.
    """
    if negative_text_features.shape[:2] != (image_features.shape[0], k) or negative_valid.shape != (image_features.shape[0], k):
        raise ValueError(
            f"the batch brings {tuple(negative_text_features.shape[:2])} text hard negatives (rows, k) for "
            f"{image_features.shape[0]} images, but the loss expects k={k}: set loss.text_hard_negatives and let "
            "data.text_hard_negatives follow it"
        )
    return torch.einsum("bd,bkd->bk", image_features, negative_text_features.to(image_features.dtype))


def check_negatives_given(k: int, negative_text_features: torch.Tensor | None) -> None:
    if k and negative_text_features is None:
        raise ValueError(
            f"loss.text_hard_negatives={k} but the batch has no hard negatives: data.text_hard_negatives must be {k}"
        )
