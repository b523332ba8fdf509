"""The foreign formats hold our image tower as timm's model (its weights under timm's names, its
architecture as timm's arguments), so they take only a timm `ImageTower`; any other `Tower` exports
with `format=clip_train`."""

from clip_train.inference import ClipModel
from clip_train.model import ImageTower


def timm_image_tower(model: ClipModel, format_name: str) -> ImageTower:
    """`model`'s image tower; ValueError naming the tower when it is not a timm `ImageTower`."""
    tower = model.model.image_tower
    if not isinstance(tower, ImageTower):
        raise ValueError(
            f"{format_name} holds the image tower as a timm model, and {type(tower).__name__} is not a timm "
            "ImageTower; export it with format=clip_train"
        )
    return tower
