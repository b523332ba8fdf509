"""The text side of a transformers export: our causal text tower is a `CLIPTextModel` already.

Both export layouts (`CLIPModel`, `VisionTextDualEncoderModel`) take the text model's
`pooler_output`, which a `CLIPTextModel` takes at the end-of-text token: the state our tower
pools. A `PretrainedTextTower` pools by mean or the first token, which no transformers model's
`pooler_output` does (BERT's adds a dense layer and tanh), so it has no export.
"""

from transformers import CLIPTextConfig

from clip_train.inference import ClipModel
from clip_train.interop.hf_processor import end_of_text_id
from clip_train.model import CausalTextTower


def clip_text_config(model: ClipModel) -> CLIPTextConfig:
    """The tower's `CLIPTextConfig`, pooling at the tokenizer's end-of-text id; ValueError if it cannot be one."""
    tower = model.text_tower
    if not isinstance(tower, CausalTextTower):
        raise ValueError(
            f"the text tower ({type(tower).__name__}, {getattr(tower, 'pooling', '?')} pooling) has no transformers "
            "form: CLIPModel and VisionTextDualEncoderModel project the text model's pooler_output, which is not "
            "that pooling; only a causal text tower (model/text_tower=causal_*) exports with format=hf"
        )
    tokenizer = model.tokenizer
    config = CLIPTextConfig.from_dict(tower.transformer.config.to_dict())
    config.eos_token_id = end_of_text_id(tokenizer)
    config.bos_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return config
