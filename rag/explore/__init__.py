"""The map of a collection: the 2-D layout (openTSNE / UMAP), the ``map.parquet`` file that stores it, and what
the Explore tab and ``/map``, ``/map_select`` serve. The file lives here because it is written from a layout.
"""

from rag.explore.layout import compute_layout
from rag.explore.map_api import MapPoints, map_details, map_payload, map_points
from rag.explore.map_file import add_map_to, read_map

__all__ = ["MapPoints", "add_map_to", "compute_layout", "map_details", "map_payload", "map_points", "read_map"]
