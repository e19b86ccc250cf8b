"""The Explore map in headless Chromium: seconds to first render and to a zoom, for 10k and 100k points.

The figure is the Explore tab's own (ui.explore_figure.map_figure: one scattergl trace per label group,
row ids as customdata, no captions beyond 20k rows), served by Gradio's gr.Plot. "render" runs from the
button click to Plotly's ``plotly_afterplot`` (server figure -> JSON -> browser -> WebGL); "zoom" is a
``Plotly.relayout`` to a quarter of the axes until ``plotly_afterplot``. Usage:

  python -m benchmarks.map_browser [--rows 10000,100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import free_port, report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
GRAPH = "#bench-map .js-plotly-plot"
WAIT_PLOT = f"""() => new Promise(done => {{
  const start = performance.now();
  const poll = () => {{
    const gd = document.querySelector('{GRAPH}');
    if (gd && gd._fullData && gd._fullData.length) return done(performance.now() - start);
    requestAnimationFrame(poll);
  }};
  poll();
}})"""
ZOOM = f"""() => new Promise(done => {{
  const gd = document.querySelector('{GRAPH}');
  const start = performance.now();
  gd.once('plotly_afterplot', () => done(performance.now() - start));
  window.Plotly.relayout(gd, {{'xaxis.range': [-0.5, 0], 'yaxis.range': [-0.5, 0]}});
}})"""


def synthetic_points(rows: int, seed: int = 0):
    """Map points in 30 blobs with 30 labels (so 20 groups + "other"), like a real collection's map."""
    from rag.explore.map_api import MapPoints, label_groups

    rng = np.random.default_rng(seed)
    owner = rng.integers(0, 30, rows)
    centres = rng.uniform(-0.8, 0.8, (30, 2))
    xy = (centres[owner] + rng.normal(0, 0.06, (rows, 2))).astype(np.float32)
    ids, names = label_groups([f"class {i}" for i in owner])
    return MapPoints(xy, ids, names)


def measure(rows: int, browser) -> dict:
    """Serve a one-plot app with ``rows`` points, click, time the render and a zoom."""
    import gradio as gr

    from ui.explore_figure import map_figure

    points = synthetic_points(rows)
    figure = map_figure(points, None, highlight=list(range(12)))
    payload_mb = len(figure.to_json()) / 2**20
    with gr.Blocks() as demo:
        button = gr.Button("show", elem_id="bench-show")
        plot = gr.Plot(elem_id="bench-map")
        button.click(lambda: map_figure(points, None, highlight=list(range(12))), None, plot)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(600_000)
        page.goto(f"http://127.0.0.1:{port}")
        started = time.perf_counter()
        page.locator("#bench-show").click()
        page.evaluate(WAIT_PLOT)
        render = time.perf_counter() - started
        zoom = page.evaluate(ZOOM) / 1000
        page.close()
    finally:
        demo.close()
    return {"points": rows, "payload_mb": payload_mb, "render_s": render, "zoom_s": zoom}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for rows in [int(r) for r in args.rows.split(",")]:
            results.append(measure(rows, browser))
            print(results[-1], flush=True)
        browser.close()
    for row in results:
        row["render_vs_first"] = row["render_s"] / results[0]["render_s"]
    report("map_browser", "Explore map in headless Chromium (software WebGL, --disable-gpu)", results,
           ["points", "payload_mb", "render_s", "render_vs_first", "zoom_s"])


if __name__ == "__main__":
    main()
