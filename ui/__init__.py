"""The Space's Gradio UI: one module per tab, the shared components and the one error mapper.

ui may import rag; rag never imports ui or gradio. ``ui.page.build_demo`` assembles the tabs.
"""
