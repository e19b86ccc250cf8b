"""Finding rows: the FAISS index, the exact int8 / fp16 scans, concurrent queries in batches, metadata filters,
filtered search, the query language, power search (``/search``) and near-duplicate groups. Knows vectors and row
masks, not files or models.
"""

from rag.search.duplicates import Duplicates, find_duplicates
from rag.search.filtered import search_page
from rag.search.filters import FilterCache, RowFilter, parse_filters
from rag.search.flat import Searcher, make_searcher
from rag.search.index import build_index, load_index, save_index
from rag.search.power import SearchResult
from rag.search.query import Term, parse_query

__all__ = ["Duplicates", "FilterCache", "RowFilter", "SearchResult", "Searcher", "Term", "build_index",
           "find_duplicates", "load_index", "make_searcher", "parse_filters", "parse_query", "save_index",
           "search_page"]
