"""Model components: towers, the dual encoder that joins them, and CoCa (a dual encoder that also captions)."""

from clip_train.model.coca import CoCa
from clip_train.model.dual_encoder import DualEncoder
from clip_train.model.image_tower import ImageTower
from clip_train.model.text_tower import CausalTextTower, PretrainedTextTower

__all__ = ["CausalTextTower", "CoCa", "DualEncoder", "ImageTower", "PretrainedTextTower"]
