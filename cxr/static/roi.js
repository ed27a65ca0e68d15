// The ROI calculator of the static book: the same model as cxr/roi/model.py and cxr/roi/inputs.py (`roi`, `validate`,
// `money`, `format_output`), run in the reader's browser with no kernel and nothing from the
// network. tests/test_book.py checks its results against Python for several inputs.
(function () {
  "use strict";
  const root = document.getElementById("cxr-roi");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  const DATA = JSON.parse(document.getElementById("cxr-roi-json").textContent);
  const WORKFLOWS = DATA.workflows; // workflow -> task
  const $ = (sel) => root.querySelector(sel);

  function money(x) {
    if (!isFinite(x)) return "n/a";
    const sign = x < 0 ? "-" : "", a = Math.abs(x);
    if (a >= 1e9) return sign + "$" + grouped(a / 1e9, 2) + "B";
    if (a >= 1e6) return sign + "$" + (a / 1e6).toFixed(2) + "M";
    if (a >= 1e3) return sign + "$" + (a / 1e3).toFixed(0) + "K";
    return sign + "$" + a.toFixed(0);
  }
  function grouped(v, digits) {
    const [i, f] = Math.abs(v).toFixed(digits).split(".");
    return (v < 0 ? "-" : "") + i.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (f ? "." + f : "");
  }
  function formatOutput(key, v) {
    const unit = DATA.outputs[key][1];
    if (unit.startsWith("$")) return money(v);
    if (key === "payback_years") {
      if (!isFinite(v) || v < 0) return "never";
      return v < 1 / 12 ? "under a month" : v < 1 ? (12 * v).toFixed(0) + " months" : grouped(v, 1) + " years";
    }
    if (!isFinite(v)) return "n/a";
    if (unit === "share") return (100 * v).toFixed(1) + "%";
    if (DATA.counts.includes(key) && v < 0) return grouped(-v, 1) + " fewer " + unit;
    return grouped(v, 1) + " " + unit;
  }
  // a number as a message quotes it (cxr.roi_inputs.shown_number): grouped digits, never exponents
  function shownNumber(v) {
    if (Math.abs(v) >= 1e12) return "a number that large";
    if (v !== 0 && Math.abs(v) < 1e-6) return "a number that close to 0";
    return v.toLocaleString("en-US", {maximumFractionDigits: 10});
  }
  // a share as the reader types it: a percentage (0.226 is typed and quoted as 22.6%)
  const toPercent = (v) => +(100 * v).toFixed(8);
  function shownPercent(v) {
    return isFinite(v) ? shownNumber(toPercent(v)) + "%" : "not a number";
  }

  function validate(site) {
    if (!(site.workflow in WORKFLOWS)) throw new Error("workflow: unknown workflow " + site.workflow);
    const task = DATA.operating_points[site.operating_point];
    if (task === undefined) throw new Error("operating point: unknown operating point " + site.operating_point);
    if (task !== WORKFLOWS[site.workflow])
      throw new Error("operating point: " + site.operating_point + " is for the " + task + " task; the " +
                      site.workflow + " workflow needs the " + WORKFLOWS[site.workflow] + " task");
    for (const name of DATA.numeric) {
      const v = site[name], [label, unit] = DATA.fields[name], [lo, hi] = DATA.bounds[name];
      if (typeof v !== "number" || !isFinite(v)) throw new Error(label + ": not a number");
      if (DATA.shares.includes(name) && !(v >= 0 && v <= 1))
        throw new Error(label + ": " + shownPercent(v) + " is not a percentage between 0 and 100 (give 20 for 20%)");
      if (DATA.shares.includes(name) && (v < lo || v > hi))
        throw new Error(label + ": " + shownPercent(v) + " is " + (v < lo ? "below" : "above") +
                        " the plausible range " + shownPercent(lo) + " to " + shownPercent(hi));
      if (v < lo || v > hi)
        throw new Error(label + ": " + shownNumber(v) + " is " + (v < lo ? "below" : "above") +
                        " the plausible range " + shownNumber(lo) + " to " + shownNumber(hi) + " " + unit);
    }
    if (site.prevalence_covid > site.prevalence_abnormal && site.workflow !== "covid_screening")
      throw new Error(DATA.fields.prevalence_covid[0] + " (" + shownPercent(site.prevalence_covid) +
                      ") cannot be above the " + DATA.fields.prevalence_abnormal[0] + " (" +
                      shownPercent(site.prevalence_abnormal) + "): COVID-19 studies are abnormal studies; " +
                      "raise the one or lower the other");
  }

  function roi(site, perf) {
    validate(site);
    const task = WORKFLOWS[site.workflow];
    const se = perf.sensitivity, sp = perf.specificity, v = site.studies_per_year;
    const prev = task === "covid" ? site.prevalence_covid : site.prevalence_abnormal;
    const flagged = prev * se + (1 - prev) * (1 - sp);
    let readWithAi, removed;
    if (site.workflow === "rule_out") {
      readWithAi = flagged * site.read_s_ai_flagged;
      removed = 1 - flagged;
    } else {
      readWithAi = (1 - flagged) * site.read_s_ai_normal + flagged * site.read_s_ai_flagged;
      removed = 0.0;
    }
    const hours = v * (site.read_s_without_ai - readWithAi) / 3600;
    const staff = hours * site.radiologist_cost_per_hour;
    let missed = 0.0, workups = 0.0;
    if (site.workflow === "rule_out") {
      missed = v * prev * site.reader_sensitivity * (1 - se);
    } else if (site.workflow === "covid_screening") {
      missed = v * prev * (site.reader_sensitivity - se);
      workups = v * (1 - prev) * (site.reader_specificity - sp);
    }
    const expedited = site.workflow === "prioritisation" ? v * prev * se * site.value_expedited : 0.0;
    const aiCost = v * site.ai_cost_per_study + site.ai_cost_per_year;
    const net = staff + expedited - missed * site.cost_missed - workups * site.cost_false_alarm - aiCost;
    return {
      net_annual_value: net,
      payback_years: net > 0 ? site.deployment_cost / net : Infinity,
      reader_hours_saved: hours,
      staff_cost_saved: staff,
      ai_cost: aiCost,
      extra_missed: missed,
      extra_workups: workups,
      worklist_share_removed: removed,
      reading_time_reduction: site.read_s_without_ai ? 1 - readWithAi / site.read_s_without_ai : 0.0,
    };
  }

  function currentSite() {
    const site = Object.assign({}, DATA.presets[$("#cxr-roi-preset").value]);
    site.operating_point = $("#cxr-roi-op").value;
    for (const input of root.querySelectorAll("input[data-field]")) {
      const text = input.value.trim(), v = text === "" ? NaN : Number(text);
      site[input.dataset.field] = DATA.shares.includes(input.dataset.field) ? v / 100 : v;
    }
    return site;
  }

  function fillOperatingPoints(site) {
    const select = $("#cxr-roi-op");
    const task = WORKFLOWS[site.workflow];
    select.innerHTML = "";
    for (const [name, t] of Object.entries(DATA.operating_points)) {
      if (t !== task) continue;
      const o = document.createElement("option");
      o.value = o.textContent = name;
      select.appendChild(o);
    }
    select.value = site.operating_point;
  }

  function loadPreset() {
    const site = DATA.presets[$("#cxr-roi-preset").value];
    fillOperatingPoints(site);
    for (const input of root.querySelectorAll("input[data-field]")) {
      const f = input.dataset.field;
      input.value = DATA.shares.includes(f) ? toPercent(site[f]) : site[f];
    }
    // COVID-19 prevalence only matters to COVID-19 screening: elsewhere its row says it is not used
    const covidRow = $("#cxr-roi-prevalence_covid").closest("tr");
    covidRow.classList.toggle("cxr-roi-unused", WORKFLOWS[site.workflow] !== "covid");
    $("#cxr-roi-story").textContent = DATA.stories[$("#cxr-roi-preset").value];
    update();
  }

  function update() {
    const err = $("#cxr-roi-error");
    err.textContent = "";
    const site = currentSite();
    const perfs = DATA.performance[$("#cxr-roi-data").value] || {};
    const perf = perfs[site.operating_point];
    root.dataset.inputs = JSON.stringify(site);
    try {
      if (!perf) throw new Error("operating_point: no measured performance for " + site.operating_point + " on this data");
      const r = roi(site, perf);
      $("#cxr-roi-perf").textContent = "sensitivity " + (100 * perf.sensitivity).toFixed(1) + "%, specificity " +
        (100 * perf.specificity).toFixed(1) + "% (" + perf.tp + "/" + (perf.tp + perf.fn) + " and " + perf.tn + "/" +
        (perf.tn + perf.fp) + ")";
      for (const cell of root.querySelectorAll("[data-output]")) {
        const key = cell.dataset.output;
        cell.textContent = formatOutput(key, r[key]);
        cell.dataset.value = String(r[key]);
      }
      root.dataset.state = "ok";
    } catch (e) {
      err.textContent = e.message;
      for (const cell of root.querySelectorAll("[data-output]")) { cell.textContent = "-"; cell.dataset.value = ""; }
      root.dataset.state = "error";
    }
  }

  $("#cxr-roi-preset").addEventListener("change", loadPreset);
  $("#cxr-roi-reset").addEventListener("click", loadPreset);
  $("#cxr-roi-data").addEventListener("change", update);
  $("#cxr-roi-op").addEventListener("change", update);
  for (const input of root.querySelectorAll("input[data-field]")) input.addEventListener("input", update);
  loadPreset();
})();
