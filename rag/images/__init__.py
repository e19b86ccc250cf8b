"""Image decoding that never surprises (RGB, upright, bombs refused), thumbnails, and the process-wide memory
budget concurrent decodes share. Used by the models, the builder and the pipeline alike, so it sits low.
"""

from rag.images.budget import ByteBudget
from rag.images.decode import ImageInput, load_image, thumbnail_bytes

__all__ = ["ByteBudget", "ImageInput", "load_image", "thumbnail_bytes"]
