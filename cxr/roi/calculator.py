"""The ROI calculators: the static book's (data for `static/roi.js`, and its HTML) and the
JupyterLab widget.
"""
from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from cxr.core.metrics import OPERATING_POINTS
from cxr.roi.cases import PRESETS, preset
from cxr.roi.format import COUNTS, format_output, money
from cxr.roi.inputs import BOUNDS, FIELDS, NUMERIC, SHARES, WORKFLOWS, InputError, Performance, Site, validate
from cxr.roi.model import OUTPUTS, roi
from cxr.roi.uncertainty import psa

# the inputs a reader can change in the static book and the JupyterLab widget: every numeric input
CALCULATOR_FIELDS = NUMERIC


def calculator_data(perf_sets: dict[str, dict[str, Performance]]) -> dict:
    """Everything the static calculator needs, as plain JSON."""
    return {
        "workflows": WORKFLOWS,
        "operating_points": {name: task for name, task, _ in OPERATING_POINTS},
        "numeric": list(NUMERIC), "shares": list(SHARES), "counts": list(COUNTS),
        "fields": {k: list(v) for k, v in FIELDS.items()}, "bounds": {k: list(v) for k, v in BOUNDS.items()},
        "outputs": {k: list(v) for k, v in OUTPUTS.items()},
        "presets": {k: dataclasses.asdict(site) for k, (site, _) in PRESETS.items()},
        "stories": {k: story for k, (_, story) in PRESETS.items()},
        "performance": {data: {op: p.to_dict() for op, p in ops.items()} for data, ops in perf_sets.items()},
    }


def calculator_html(perf_sets: dict[str, dict[str, Performance]]) -> str:
    """A self-contained HTML calculator (inline JavaScript, nothing from the network) for the static book."""
    data = json.dumps(calculator_data(perf_sets)).replace("</", "<\\/")
    script = (Path(__file__).parents[1] / "static" / "roi.js").read_text()
    opt = lambda v, label: f'<option value="{html.escape(v)}">{html.escape(label)}</option>'  # noqa: E731
    presets = "".join(opt(k, site.name) for k, (site, _) in PRESETS.items())
    datas = "".join(opt(k, k) for k in perf_sets)
    def step(f):
        return "1" if f == "studies_per_year" else "any"

    def unit(f):  # a share is typed as a percentage
        return "%" if f in SHARES else FIELDS[f][1]

    def bound(f, k):
        return 100 * BOUNDS[f][k] if f in SHARES else BOUNDS[f][k]

    unused = ('<span class="cxr-roi-unused-note"> (not used by this workflow: only COVID-19 screening reads it)'
              '</span>')
    inputs = "".join(
        f'<tr><td><label for="cxr-roi-{f}">{html.escape(FIELDS[f][0])}</label>'
        f'<span class="cxr-roi-unit"> ({html.escape(unit(f))})</span>{unused if f == "prevalence_covid" else ""}'
        f'<div class="cxr-roi-source">{html.escape(FIELDS[f][2])}</div></td>'
        f'<td><input id="cxr-roi-{f}" type="number" step="{step(f)}" min="{bound(f, 0):g}" max="{bound(f, 1):g}" '
        f'data-field="{f}" inputmode="decimal"></td></tr>'
        for f in CALCULATOR_FIELDS)
    rows = "".join(f'<tr><td>{html.escape(label)}</td><td data-output="{k}" style="text-align:right"></td></tr>'
                   for k, (label, _) in OUTPUTS.items())
    return f"""<div id="cxr-roi" class="cxr-roi">
<div><label>use case <select id="cxr-roi-preset">{presets}</select></label>
<button type="button" id="cxr-roi-reset" title="put every input back to the use case's values">reset to the use case</button></div>
<div><label>performance measured on <select id="cxr-roi-data">{datas}</select></label>
<label>operating point <select id="cxr-roi-op"></select></label></div>
<p id="cxr-roi-story" class="cxr-roi-story"></p>
<div class="cxr-roi-panes">
<div><p>model: <span id="cxr-roi-perf"></span></p>
<p id="cxr-roi-error" class="cxr-roi-error" role="alert"></p>
<table class="cxr-roi-results"><tbody>{rows}</tbody></table>
<p class="cxr-roi-note">These are the values at the inputs as typed. The table of use cases above gives, for each
use case's own inputs, the median and 90% interval of the uncertainty analysis, which varies every input at once.</p></div>
<table class="cxr-roi-inputs"><tbody>{inputs}</tbody></table>
</div>
<script type="application/json" id="cxr-roi-json">{data}</script>
<script>{script}</script>
</div>"""


def widget(perf_sets: dict[str, dict[str, Performance]], draws: int = 500, seed: int = 0):
    """The JupyterLab calculator: preset, data and operating point, and every input (sliders for
    the main ones, number boxes for the rest, each with its unit and source), with a reset to the
    use case's values; the results, the uncertainty analysis and its histogram update live. The
    result table carries the inputs and the net value as data attributes, for the browser test."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    preset_box = w.Dropdown(options=[(site.name, k) for k, (site, _) in PRESETS.items()], value="default",
                            description="use case")
    data_box = w.Dropdown(options=list(perf_sets), description="measured on")
    op_box = w.Dropdown(description="operating point")
    spec = {  # field -> (widget class, min, max, step): sliders for the inputs readers move most
        "studies_per_year": (w.IntSlider, 1_000, 300_000, 1_000),
        "prevalence_abnormal": (w.FloatSlider, 0.0, 1.0, 0.01),
        "prevalence_covid": (w.FloatSlider, 0.0, 1.0, 0.01),
        "read_s_without_ai": (w.FloatSlider, 1.0, 120.0, 0.1),
        "read_s_ai_normal": (w.FloatSlider, 0.0, 120.0, 0.1),
        "read_s_ai_flagged": (w.FloatSlider, 1.0, 120.0, 0.1),
        "radiologist_cost_per_hour": (w.FloatSlider, 0.0, 600.0, 5.0),
        "ai_cost_per_study": (w.FloatSlider, 0.0, 20.0, 0.05),
        "ai_cost_per_year": (w.FloatSlider, 0.0, 200_000.0, 1_000.0),
    }
    assert all(BOUNDS[f][0] <= lo and hi <= BOUNDS[f][1] for f, (_, lo, hi, _) in spec.items())
    style, layout = {"description_width": "16em"}, w.Layout(width="36em")
    # every other input is a number box; a value outside its plausible range gets a message, not a clamp
    sliders = {f: (spec[f][0](min=spec[f][1], max=spec[f][2], step=spec[f][3], description=FIELDS[f][0], style=style,
                              layout=layout, continuous_update=False) if f in spec else
                   w.FloatText(description=FIELDS[f][0], style=style, layout=w.Layout(width="28em")))
               for f in CALCULATOR_FIELDS}
    for f, box in sliders.items():
        box.tooltip = FIELDS[f][2]
        if f in SHARES and f in spec:
            box.readout_format = ".1%"  # a share reads as a percentage: 22.6%, not 0.226
    rows = [w.HBox([box, w.HTML(f"<small>{html.escape(FIELDS[f][1])}; {html.escape(FIELDS[f][2])}</small>",
                                layout=w.Layout(max_width="28em"))]) for f, box in sliders.items()]
    reset = w.Button(description="reset to the use case", tooltip="put every input back to the use case's values")
    story, result, plot = w.HTML(), w.HTML(), w.Output()
    busy = {"on": False}

    def site_now() -> Site:
        base = preset(preset_box.value)
        return base.replace(operating_point=op_box.value or base.operating_point,
                            **{f: (int(s.value) if f == "studies_per_year" else float(s.value)) for f, s in sliders.items()})

    def refresh(*_):
        if busy["on"]:
            return
        try:
            site = validate(site_now())
            perf = perf_sets[data_box.value].get(site.operating_point)
            if perf is None:
                raise InputError(f"operating_point: no measured performance for {site.operating_point} on this data")
            r, u = roi(site, perf), psa(site, perf, n=draws, seed=seed)
        except InputError as e:
            result.value = f'<p class="cxr-roi-error" style="color:#b00020">{html.escape(str(e))}</p>'
            return
        rows = "".join(f"<tr><td>{html.escape(label)}</td><td class='cxr-roi-{k}' style='text-align:right'>"
                       f"{format_output(k, r[k])}</td></tr>" for k, (label, _) in OUTPUTS.items())
        inputs = html.escape(json.dumps(dataclasses.asdict(site)))
        result.value = (f"<div class='cxr-roi-result' data-inputs='{inputs}' data-net='{r['net_annual_value']!r}' "
                        f"data-data='{html.escape(data_box.value)}'>"
                        f"<p>model: sensitivity {100 * perf.sensitivity:.1f}%, specificity {100 * perf.specificity:.1f}% "
                        f"({html.escape(perf.source)})</p><table>{rows}</table>"
                        f"<p>uncertainty ({u['n']} draws): median {money(u['median'])}, 90% interval "
                        f"{money(u['interval90'][0])} to {money(u['interval90'][1])}, P(net &gt; 0) = "
                        f"{100 * u['p_positive']:.0f}%</p></div>")
        with plot:
            plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 2.2))
            ax.hist(u["net_values"] / 1e3, bins=40, color="#4c72b0")
            ax.axvline(0, color="k", lw=1)
            ax.set_xlabel("net annual value ($K)")
            ax.set_yticks([])
            plt.show()

    def load_preset(*_):
        site, text = PRESETS[preset_box.value]
        busy["on"] = True

        op_box.options = [n for n, t, _ in OPERATING_POINTS if t == WORKFLOWS[site.workflow]]
        op_box.value = site.operating_point
        for f, s in sliders.items():
            s.value = getattr(site, f)
        story.value = f"<i>{html.escape(text)}</i>"
        busy["on"] = False
        refresh()

    preset_box.observe(load_preset, "value")
    reset.on_click(load_preset)
    for box in (data_box, op_box, *sliders.values()):
        box.observe(refresh, "value")
    load_preset()
    return w.VBox([w.HBox([preset_box, reset]), story, w.HBox([data_box, op_box]), result, plot, *rows])
