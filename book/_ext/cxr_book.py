"""Small fixes that keep the built book clean offline.

Under Jupyter Book 1.x, the inline scripts of sphinx-thebe (always loaded) and
sphinx-togglebutton end up registered twice, so every page declared `const THEBE_JS_URL` twice:
a console error in the browser. This drops repeated script entries from every page.

Chapter 08's browser panel runs the book's model with ONNX Runtime Web: when the HTML build has
finished, `cxr.report.browser_demo.write_assets` puts the runtime (npm ci from book/web's lock
file), the model as ONNX and its model.json in the site's _static/cxr-try/.

A figure's image without alt text gets its caption's first sentence (`_alt_from_caption`).

Interactive figures (`cxr.report.interactive`) draw themselves with plotly.js: a page that holds
one loads the copy the installed plotly package carries, from the site's own _static (never a CDN).

`CXR_CELL_TIMEOUT` (seconds), when set, replaces the per-cell execution timeout of
book/_config.yml for one build: the test build uses it so that a cell that hangs fails the
build in minutes instead of holding CI until it is killed.
"""
import os
from pathlib import Path


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for js in context.get("script_files", []):
        # the same file or inline body, whatever priority each registration carried
        key = (getattr(js, "filename", None) or "", repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def _cell_timeout_from_env(app, config):
    if os.environ.get("CXR_CELL_TIMEOUT"):
        config.nb_execution_timeout = int(os.environ["CXR_CELL_TIMEOUT"])


def _browser_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from cxr.core.config import get_config
    from cxr.report import browser_demo

    browser_demo.write_assets(Path(app.outdir) / "_static" / browser_demo.ASSETS, get_config())


def _plotly_on_pages_that_need_it(app, pagename, templatename, context, doctree):
    from cxr.report import interactive

    if interactive.MARKER in context.get("body", ""):
        app.add_js_file(interactive.PLOTLY_JS)


def _plotly_asset(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    import shutil

    from cxr.report import interactive

    shutil.copyfile(interactive.plotly_js_path(), Path(app.outdir) / "_static" / interactive.PLOTLY_JS)


def _alt_from_caption(app, doctree, docname):
    """A figure's images without alt text get the caption's first sentence (HTML otherwise shows
    the image file's path to a reader who cannot see it)."""
    from docutils import nodes

    for fig in doctree.findall(nodes.figure):
        caption = fig.next_node(nodes.caption)
        text = " ".join(caption.astext().split()) if caption is not None else ""
        first = text.split(". ")[0].rstrip(".") + "." if text else ""
        for img in fig.findall(nodes.image):
            alt = img.get("alt", "")
            if first and (not alt or alt == img.get("uri") or "/" in alt):
                img["alt"] = first


def setup(app):
    app.connect("doctree-resolved", _alt_from_caption)
    app.connect("config-inited", _cell_timeout_from_env, priority=100)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("html-page-context", _plotly_on_pages_that_need_it, priority=500)
    app.connect("build-finished", _browser_assets)
    app.connect("build-finished", _plotly_asset)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
