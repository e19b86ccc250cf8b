"""How the page looks and reads: a theme with WCAG AA contrast, phone layout rules and screen-reader help.

Contrast is fixed in the theme's variables (gr.themes.Soft with darker label, hint and button colours), not
with one-off styles. The CSS only adds what the theme has no variable for: a visible keyboard focus ring, result
galleries that grow with their rows, captions as a small two-line strip, two gallery columns on narrow screens,
44-px tap targets and the Duplicates tab's thumbnail buttons. The script brings the first row that "Load more"
appended into view, gives each gallery
thumbnail an accessible name that says what the result is (Gradio names them "Thumbnail 1 of 12"), names the
image example buttons, gives Gradio's empty-gallery placeholder the role its aria-label needs, and marks the
result-count lines as polite live regions.
"""

from __future__ import annotations

import gradio as gr

THEME_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
PHONE_MAX_WIDTH = 640


def space_theme() -> gr.themes.Base:
    """gr.themes.Soft with system fonts (no Google Fonts fetch) and colours that pass WCAG AA (4.5:1)."""
    return gr.themes.Soft(font=THEME_FONTS, font_mono=MONO_FONTS).set(
        block_label_text_color="*primary_700",  # primary_500 on primary_100 was 3.6:1
        block_title_text_color="*primary_700",
        body_text_color_subdued="*neutral_600",  # slider min/max, hints
        body_text_color_subdued_dark="*neutral_300",
        button_primary_background_fill="*primary_600",  # white on primary_500 was 4.46:1
        button_primary_background_fill_dark="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        button_primary_background_fill_hover_dark="*primary_700",
    )


CSS = f"""
:where(button, a, input, textarea, select, [role="tab"], [tabindex]):focus-visible {{
  outline: 3px solid #4338ca; outline-offset: 2px;
}}
.dark :where(button, a, input, textarea, select, [role="tab"], [tabindex]):focus-visible {{ outline-color: #c7d2fe; }}
.live-status {{ overflow: visible !important; }}
/* The Explore message grows with its text instead of scrolling inside a fixed box (axe: scrollable-region). */
#explore-message {{ height: auto !important; min-height: 0 !important; max-height: none !important;
  overflow: visible !important; }}
/* Result galleries grow with their rows: Gradio caps an "auto" gallery at ~500 px with a scrollbar inside, which
   hid the third row of 12 results and every row that Load more appended. */
.results-gallery .grid-wrap.fixed-height {{ max-height: none !important; height: auto !important;
  overflow-y: visible !important; }}
/* Captions are a small strip at the foot of each thumbnail, two lines at most (the details show everything). */
.results-gallery .caption-label {{ white-space: normal; overflow-wrap: anywhere; font-size: var(--text-xs);
  line-height: 1.3; padding: 1px 6px; bottom: 4px; max-width: calc(100% - 8px); overflow: hidden;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }}
/* Duplicates: each thumbnail is a button that shows its row's details, which stay in view beside the groups. */
#duplicates-groups .duplicate-thumb {{ padding: 0; border: 1px solid var(--border-color-primary); border-radius: 4px;
  background: none; cursor: pointer; min-height: 44px; }}
#duplicates-groups .duplicate-thumb img {{ height: 96px; width: 96px; object-fit: contain; display: block;
  border-radius: 4px; }}
#duplicates-groups .duplicate-thumb[aria-pressed="true"] {{ outline: 3px solid #4338ca; outline-offset: 1px; }}
#duplicates-details-column {{ position: sticky; top: 8px; align-self: flex-start; }}
@media (max-width: {PHONE_MAX_WIDTH}px) {{
  .results-gallery .grid-container {{ grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }}
  button, [role="tab"], .gallery-item, .thumbnail-item {{ min-height: 44px; }}
  input[type="range"] {{ min-height: 44px; }}
}}
"""

# Gallery thumbnails are buttons named "Thumbnail i of n": name them by what they show instead.
HEAD = """
<script>
(() => {
  // "Load more": remember how many results were shown, then bring the first new one into view.
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('button[id$="-load-more"]');
    if (!button) return;
    const gallery = button.id.replace(/-load-more$/, '-gallery');
    window.ragMoreFrom = {gallery, from: document.querySelectorAll(`#${gallery} button.thumbnail-item`).length};
  }, true);
  const revealAppended = () => {
    const more = window.ragMoreFrom;
    if (!more) return;
    const items = document.querySelectorAll(`#${more.gallery} button.thumbnail-item`);
    if (items.length <= more.from) return;
    window.ragMoreFrom = null;
    const still = matchMedia('(prefers-reduced-motion: reduce)').matches;
    items[more.from].scrollIntoView({block: 'start', behavior: still ? 'auto' : 'smooth'});
  };
  const label = () => {
    revealAppended();
    document.querySelectorAll('.live-status:not([aria-live])').forEach((e) => {
      e.setAttribute('role', 'status'); e.setAttribute('aria-live', 'polite');
    });
    // Gradio's empty-gallery placeholder has an aria-label but no role, which ARIA does not allow.
    document.querySelectorAll('.empty[aria-label]:not([role])').forEach((e) => e.setAttribute('role', 'img'));
    // Image examples are buttons holding an image with empty alt text: give them a name.
    document.querySelectorAll('.gallery-item').forEach((button, i) => {
      if (!button.textContent.trim() && !button.getAttribute('aria-label')) {
        button.setAttribute('aria-label', `Example image ${i + 1} from the collection`);
      }
    });
    document.querySelectorAll('.results-gallery button.thumbnail-item').forEach((button, i, all) => {
      const img = button.querySelector('img');
      const text = img && img.alt ? img.alt : '';
      const name = `Result ${i + 1} of ${all.length}` + (text ? `: ${text}` : '');
      if (button.getAttribute('aria-label') !== name) button.setAttribute('aria-label', name);
    });
  };
  new MutationObserver(label).observe(document.documentElement, {subtree: true, childList: true, attributes: true,
    attributeFilter: ['alt']});
})();
</script>
"""
