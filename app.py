"""The Space's entry point: settings -> start-up (rag.startup) -> UI (ui.page) -> launch.

    python app.py [--host 0.0.0.0] [--port 7860]     (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT also work)

The UI lives in ui/ (one module per tab), the RAG flow in rag/ (which never imports gradio).
``build_demo``, ``launch`` and ``load_pipeline`` are re-exported here for tests and benchmarks.
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before torch initialises CUDA.
    import spaces  # noqa: F401
except ImportError:
    spaces = None

import argparse
import logging

from rag.errors import StartupError
from rag.startup import load_pipeline
from ui.page import TITLE, build_demo, launch

__all__ = ["TITLE", "StartupError", "build_demo", "launch", "load_pipeline", "main"]


def main(argv: list[str] | None = None) -> None:
    """Parse --host/--port, load everything once, serve the page."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipeline, captioner_error = load_pipeline()
    demo = build_demo(pipeline, captioner_error=captioner_error)
    launch(demo, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
