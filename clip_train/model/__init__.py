"""Model components: towers (the `Tower` contract and its implementations), the dual encoder that
joins them, and CoCa (a dual encoder that also captions)."""

from clip_train.model.coca import CoCa
from clip_train.model.dual_encoder import DualEncoder
from clip_train.model.embedding_bag_text_tower import EmbeddingBagTextTower
from clip_train.model.image_tower import ImageTower
from clip_train.model.siglip_text_tower import SiglipTextTower
from clip_train.model.text_tower import CausalTextTower, PretrainedTextTower
from clip_train.model.tower import Tower

__all__ = [
    "CausalTextTower",
    "CoCa",
    "DualEncoder",
    "EmbeddingBagTextTower",
    "ImageTower",
    "PretrainedTextTower",
    "SiglipTextTower",
    "Tower",
]
