"""Interoperability with the CLIP ecosystem: start training from published weights, hand trained models on.

In: `init_from(path)` reads a transformers `CLIPModel` folder or an OpenCLIP checkpoint into a
`PretrainedCLIP` (our model config + weights in our layout + tokenizer); `model=clip_pretrained
model.init_from=PATH` trains from it. Out: `python -m clip_train.export format=hf|open_clip`.
"""

from clip_train.interop.pretrained import PretrainedCLIP
from clip_train.interop.reader import init_from

__all__ = ["PretrainedCLIP", "init_from"]
