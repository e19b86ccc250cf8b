"""The references of a creation: the collection rows nearest the query text and/or image, and the init image.

Search goes through the Pipeline (its encoder, its index, its rows and thumbnails): text alone, image alone,
or both combined as the general search combines terms (``rag.search.power.query_vector``: the normalised sum
of the normalised text and image vectors). The init image is the best reference's stored thumbnail.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from rag.images.decode import ImageInput, load_image
from rag.pipeline import Hit, Pipeline
from rag.search.power import query_vector
from rag.search.query import Term


def find_references(
    pipeline: Pipeline, query: str, image: Image.Image | None, k: int, exclude: Sequence[int] = ()
) -> list[Hit]:
    """The k rows nearest ``query`` and/or ``image`` (at least one is given), ``exclude``d rows left out."""
    encoder = pipeline.encoder
    image_vector = encoder.encode_images([image]) if image is not None else None
    if query and image_vector is not None:
        terms = [Term("text", query, 1.0), Term("image", "uploaded image", 1.0)]
        vector = query_vector(terms, encoder.encode_texts, pipeline.row_vectors, image_vector)
    elif query:
        vector = encoder.encode_texts([query])
    else:
        vector = image_vector
    return pipeline.search_vectors(vector, k, exclude=exclude)[0]


def reference_image(pipeline: Pipeline, hit: Hit) -> Image.Image:
    """The stored image (thumbnail) of a reference row, decoded as RGB."""
    return load_image(pipeline.collection.thumbnail(hit.id))


def user_image(image: ImageInput | None) -> Image.Image | None:
    """The caller's image decoded (bombs and non-images refused with a message), or None."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return None
    return load_image(image)
