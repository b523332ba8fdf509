"""Model components: towers and the dual encoder that joins them."""

from clip_train.model.dual_encoder import DualEncoder
from clip_train.model.image_tower import ImageTower
from clip_train.model.text_tower import CausalTextTower, PretrainedTextTower

__all__ = ["CausalTextTower", "DualEncoder", "ImageTower", "PretrainedTextTower"]
