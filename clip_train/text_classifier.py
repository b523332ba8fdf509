"""A classifier made from text: each class's weight is the embedding of prompts naming it.

A class's weight is the normalised mean of the text embeddings of its prompts ("a photo of a
{}." filled with the class name, for each template); an image's class is the one whose weight
has the highest cosine with its embedding. `clip_train.inference` classifies with it and
`clip_train.eval` measures zero-shot accuracy with it, so it sits below both.
"""

from collections.abc import Callable, Sequence

import torch

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@torch.no_grad()
def class_weights(
    encode_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(C, D) unit-norm class weights: the normalised mean embedding of each class's prompts."""
    prompts = [template.format(name) for name in classnames for template in templates]
    embeddings = encode_text(prompts).reshape(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(embeddings.mean(dim=1), dim=-1)
