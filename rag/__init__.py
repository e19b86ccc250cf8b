"""Multimodal RAG over an image collection: CLIP embeddings in FAISS plus a captioner."""
