"""Small fixes that keep the built book clean offline.

Under Jupyter Book 1.x, the inline scripts of sphinx-thebe (always loaded) and
sphinx-togglebutton end up registered twice, so every page declared `const THEBE_JS_URL` twice:
a console error in the browser. This drops repeated script entries from every page.

`CXR_CELL_TIMEOUT` (seconds), when set, replaces the per-cell execution timeout of
book/_config.yml for one build: the test build uses it so that a cell that hangs fails the
build in minutes instead of holding CI until it is killed.
"""
import os


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


def setup(app):
    app.connect("config-inited", _cell_timeout_from_env, priority=100)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
