"""Model cards, rendered by train.py from the figures of the run that wrote the models."""

from __future__ import annotations

import simulate as S

HORIZONS = (24, 48, 72)


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _header(entry: dict, seed: int, title: str) -> str:
    return (
        f"# Model card: `{entry['name']}`\n\n"
        f"{title}\n\n"
        "| | |\n|---|---|\n"
        f"| Model version | {entry['version']} |\n"
        f"| File | `{entry['file']}` (sha256 `{entry['sha256']}`) |\n"
        f"| Format | ONNX, default operator set {entry['opset']}, IR version {entry['ir_version']}; "
        "checked by loading with ONNX Runtime 1.31.0 |\n"
        f"| Training seed | {seed} |\n"
        "| Written by | `python models/train/train.py --out models` (same seed, same bytes) |\n"
    )


LIMITATIONS_COMMON = (
    "- **Synthetic data only.** Trained and evaluated on the seeded generator in "
    "`models/train/simulate.py`, whose parameters follow published ranges, not any real "
    "hospital. The held-out figures say how well the model recovers the generator's own "
    "structure; they are not evidence of accuracy in a real hospital.\n"
    "- **Recalibrate before clinical use.** Before it informs decisions in a hospital, retrain "
    "it on that hospital's own history (at the very least recalibrate its interval or planning "
    "margin and compare it with the fallback there), and keep monitoring the same held-out "
    "figures against the fallback.\n"
    "- Decision support for operations staff; it makes no statement about individual patients.\n"
)


def bed_card(m: dict, info: dict, seed: int, entry: dict, set_version: str) -> str:
    s = _header(
        entry, seed,
        "Forecasts the occupied beds of one inpatient unit 24, 48 and 72 hours ahead, each "
        "with an 80 % interval.",
    )
    s += (
        "\n## Intended use\n\n"
        "Bed managers' view of each unit's expected occupancy over the next three days, to plan "
        "elective admissions, staffing and escalation. When the model is missing, fails its "
        "manifest checks or times out, the appliance answers with the fallback: the unit's "
        "historical average occupied beds for the target weekday and hour.\n"
        "\n## Inputs and outputs\n\n"
        "Input `features`, float32, shape [N, 10], one row per unit at an hour boundary:\n\n"
        "| # | Feature | Meaning |\n|---|---|---|\n"
        "| 0 | `census` | occupied beds now |\n"
        "| 1 | `capacity` | beds in the unit |\n"
        "| 2 | `arrivals_24h` | admissions into the unit in the past 24 h |\n"
        "| 3 | `discharges_24h` | discharges from the unit in the past 24 h |\n"
        "| 4 | `pending_admissions` | beds reserved for incoming patients (booked electives for the "
        "next 24 h, patients waiting for a bed) |\n"
        "| 5 | `pending_discharges` | occupied beds flagged for expected discharge |\n"
        "| 6, 7 | `hour_sin`, `hour_cos` | sin, cos of 2π·hour/24 |\n"
        "| 8, 9 | `weekday_sin`, `weekday_cos` | sin, cos of 2π·weekday/7, 0 = Monday |\n"
        "\nOutput `forecast`, float32, shape [N, 9]: `h24_lo, h24_mid, h24_hi, h48_lo, h48_mid, "
        "h48_hi, h72_lo, h72_mid, h72_hi` in occupied beds; `lo`/`hi` bound an 80 % interval "
        "(10th to 90th percentile), `mid` is the point forecast. Every value lies in "
        "[0, capacity] and lo ≤ mid ≤ hi.\n"
        "\n## How it works\n\n"
        "The graph turns the counts into shares of capacity (capacity below 1 is treated as 1), "
        "adds log(capacity)/3 and arrivals_24h / max(census, 1), and feeds these 11 values to a "
        "small multilayer perceptron (11 → 32 → 32 → 3, ReLU; the input standardisation is "
        "folded into the first layer). It predicts the change in occupied beds as a share of "
        "capacity for each horizon; the point forecast is census + capacity × change, clamped to "
        "[0, capacity]. The interval adds per-horizon residual quantiles scaled by "
        "√(arrivals_24h + discharges_24h + 2), a proxy for the unit's turnover; the quantiles "
        "(10th and 90th percentile of the scaled residuals) come from training-period rows the "
        "network was not fitted on. Operators used: Gather, Div, Log, Max, Min, Concat, MatMul, "
        "Add, Mul, Relu, Sqrt.\n"
        "\nInterval multipliers (beds per unit of √turnover), 24/48/72 h: low "
        + ", ".join(_f(v, 3) for v in info["q_lo"]) + "; high "
        + ", ".join(_f(v, 3) for v in info["q_hi"]) + ".\n"
        "\n## Training data\n\n"
        f"- Generator: `models/train/simulate.py`, seed {seed}; one hospital of {info['units']} "
        f"units and {info['beds']} beds (13 unit types from a 36-bed acute medical unit to "
        "14- and 16-bed intensive care units), simulated patient by patient at hourly "
        "resolution from 2024-11-01 (two months of warm-up discarded).\n"
        f"- Training period: hour boundaries from 2025-01-01 00:00 to 2025-12-28 23:00 (so that "
        f"every 72 h target lies in 2025): {info['train_rows']:,} unit-hours; the network was "
        f"fitted on a random {info['fit_rows']:,} of them ({info['epochs']} epochs, Adam), the "
        f"interval on the other {info['calibration_rows']:,}.\n"
        f"- Mean occupancy in 2025: {_pct(info['occupancy_train'])}. Over the whole run "
        f"{info['diverted']:,} of {info['emergency']:,} emergency admissions were transferred "
        f"elsewhere after waiting a day for a bed, and {info['cancelled']:,} elective admissions "
        "were cancelled for want of a bed.\n"
        "\n## Held-out evaluation\n\n"
        f"Period: hour boundaries 2026-01-01 00:00 to 2026-06-30 23:00 ({info['heldout_rows']:,} "
        "unit-hours), which the model never saw. Fallback: mean occupied beds per unit × weekday × "
        "hour over 2025. Hospital figures compare the sum over units of the point forecasts with "
        "the hospital's occupied beds; unit figures are per unit-hour. MAPE in %, MAE and bias "
        "(forecast − actual) in beds.\n\n"
        "| Horizon | Hospital MAPE | Fallback | Hospital MAE | Fallback | Unit MAE | Fallback | "
        "Hospital bias | Fallback |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    for h in HORIZONS:
        s += (
            f"| {h} h | {_f(m[f'mape_{h}h_hospital'])} | {_f(m[f'fallback_mape_{h}h_hospital'])} "
            f"| {_f(m[f'mae_{h}h_hospital_beds'], 1)} | {_f(m[f'fallback_mae_{h}h_hospital_beds'], 1)} "
            f"| {_f(m[f'mae_{h}h_unit_beds'])} | {_f(m[f'fallback_mae_{h}h_unit_beds'])} "
            f"| {_f(m[f'bias_{h}h_hospital_beds'], 1)} | {_f(m[f'fallback_bias_{h}h_hospital_beds'], 1)} |\n"
        )
    s += "\n80 % interval, unit level:\n\n| Horizon | Coverage | Mean width (beds) |\n|---|---|---|\n"
    for h in HORIZONS:
        s += f"| {h} h | {_pct(m[f'coverage_80_{h}h_unit'])} | {_f(m[f'interval_width_{h}h_unit_beds'], 1)} |\n"
    s += (
        "\n24 h unit MAE by unit type (beds):\n\n| Unit type | Model | Fallback | 80 % coverage |\n"
        "|---|---|---|---|\n"
    )
    names = {ut.code: f"{ut.code} ({ut.description}, {ut.count} × {ut.beds} beds)" for ut in S.UNIT_TYPES}
    for code, (mae, fb, cov) in info["by_type"].items():
        s += f"| {names[code]} | {_f(mae)} | {_f(fb)} | {_pct(cov)} |\n"
    beats = all(
        m[f"mape_{h}h_hospital"] < m[f"fallback_mape_{h}h_hospital"]
        and m[f"mae_{h}h_hospital_beds"] < m[f"fallback_mae_{h}h_hospital_beds"]
        for h in HORIZONS
    )
    s += (
        "\nAgainst the targets set for this version:\n\n"
        f"- Hospital 24 h MAPE ≤ 7 %: {_f(m['mape_24h_hospital'])} % — {_met(m['mape_24h_hospital'] <= 7)}.\n"
        f"- Better than the fallback on hospital MAPE and MAE at 24, 48 and 72 h: {_met(beats)}.\n"
        f"- Unit 24 h MAE ≤ 1.5 beds: {_f(m['mae_24h_unit_beds'])} — "
        f"{_met(m['mae_24h_unit_beds'] <= 1.5)}. The error is mostly the next day's emergency "
        "admissions, which no feature announces: it is largest on the short-stay, high-turnover "
        "units (acute medical unit, paediatrics, maternity) and smallest where stays are long.\n"
        "\n## Limitations\n\n"
        + LIMITATIONS_COMMON
        + "- The model sees one unit at a time and nothing of the emergency department's queue "
        "beyond patients already waiting for the unit; sudden surges (outbreaks, major "
        "incidents) show only once admissions rise.\n"
        "- The generator has no transfers between units, no ward closures and no public "
        "holidays; a hospital with them needs its own training data.\n"
        "- The interval is calibrated on average over units and hours; its coverage differs by "
        "unit type (see the table) and is wider than needed on low-turnover units.\n"
        "- Inputs outside the training range (a unit much larger than 36 beds, census above "
        "capacity) are extrapolated; outputs are clamped to [0, capacity].\n"
        "\n## Version\n\n"
        f"{entry['version']} — first release, model set {set_version}.\n"
    )
    return s


def or_card(m: dict, info: dict, seed: int, entry: dict, set_version: str) -> str:
    p = info["params"]
    s = _header(
        entry, seed,
        "Predicts how long an elective operating-room case will take, in minutes, as a "
        "planning duration (the 75th percentile of the predicted duration).",
    )
    s += (
        "\n## Intended use\n\n"
        "Operating-list planning: an estimate to set next to the surgeon's booked duration "
        "when lists are built and when the day's running order is checked. Aiming at the 75th "
        "percentile means about one case in four is expected to run over its plan, against one "
        "in two for a median estimate. When the model is missing, fails its checks or times "
        "out, the appliance answers with the fallback: the surgeon's historical mean duration "
        "+ 20 % (`surgeon_mean_minutes` in the manifest), or the booked minutes when the "
        "surgeon is unknown.\n"
        "\n## Inputs and outputs\n\n"
        "Input `features`, float32, shape [N, 5]:\n\n"
        "| # | Feature | Meaning |\n|---|---|---|\n"
        "| 0 | `booked_minutes` | duration booked for the case |\n"
        "| 1 | `age` | patient age in years |\n"
        "| 2 | `asa` | ASA physical status class 1–4 (rounded and clamped to 1–4) |\n"
        "| 3 | `procedure_code` | index into the manifest's `procedures`; -1 (or any value "
        "outside the list) = unknown |\n"
        "| 4 | `surgeon_code` | index into the manifest's `surgeons`; -1 (or outside) = unknown |\n"
        "\nOutput `minutes`, float32, shape [N, 1]: the planning duration in minutes "
        "(always positive).\n"
        "\n## How it works\n\n"
        "A log-linear model: log(minutes) = intercept + a·log(max(booked, 5)) + b·age + "
        "c·max(age − 60, 0) + ASA effect + procedure effect + surgeon effect + z·σ(procedure), "
        "then exp. Effects are ridge-regression coefficients (α = 1) on one-hot codes fitted to "
        "log(actual minutes); procedure and surgeon effects are centred on the training mix, so "
        "an unknown code counts as the average procedure or surgeon. σ(procedure) is the "
        "residual standard deviation of that procedure in training (pooled for an unknown one) "
        f"and z = {_f(p['z'], 4)} (the 75th percentile of a normal). Operators used: Gather, Max, "
        "Min, Log, Mul, Sub, Round, Cast, GreaterOrEqual, Less, And, Where, Sum, Exp.\n"
        f"\nFitted: a = {_f(p['log_booked'], 4)}, b = {_f(p['age'], 5)}/year, "
        f"c = {_f(p['age_over_60'], 5)}/year, ASA 1–4 = "
        + ", ".join(_f(v, 3) for v in p["asa"])
        + f"; residual σ pooled {_f(p['sigma_pooled'], 3)}, by procedure "
        f"{_f(min(p['sigma']), 3)}–{_f(max(p['sigma']), 3)}.\n"
        "\n## Training data\n\n"
        f"- Generator: `models/train/simulate.py`, seed {seed}: 20 procedures in 8 "
        "specialties, 30 surgeons with their own operating days, speed and booking habits; "
        "operating lists of about 8 hours on weekdays, filled from each surgeon's case mix.\n"
        f"- Training period: cases operated in 2025: {info['train_cases']:,} cases. Booked "
        f"durations fall short of the actual ones by {_pct(info['underbooking'])} overall "
        "(total booked vs total actual minutes).\n"
        "\n## Held-out evaluation\n\n"
        f"Cases operated 2026-01-01 to 2026-06-30: {info['heldout_cases']:,} cases, of which "
        f"{info['new_surgeon_cases']:,} by two surgeons who started in March 2026 and are "
        "unknown to the model (code -1). Bias is the mean of (prediction − actual) in minutes: "
        "positive means the plan is longer than the case. Overrun rate: share of cases whose "
        "actual duration exceeds the prediction.\n\n"
        "| Figure | Model | Fallback (surgeon mean + 20 %) | Model median (z = 0) | "
        "Booked minutes as they are |\n|---|---|---|---|---|\n"
    )
    med, bk = info["median"], info["booked"]
    s += (
        f"| MAE (min) | {_f(m['mae_minutes'], 1)} | {_f(m['fallback_mae_minutes'], 1)} | "
        f"{_f(med['mae_minutes'], 1)} | {_f(bk['mae_minutes'], 1)} |\n"
        f"| Bias (min) | {_f(m['bias_minutes'], 1)} | {_f(m['fallback_bias_minutes'], 1)} | "
        f"{_f(med['bias_minutes'], 1)} | {_f(bk['bias_minutes'], 1)} |\n"
        f"| Within ±10 % | {_pct(m['within_10pct'])} | {_pct(m['fallback_within_10pct'])} | "
        f"{_pct(med['within_10pct'])} | {_pct(bk['within_10pct'])} |\n"
        f"| Overrun rate | {_pct(m['overrun_rate'])} | {_pct(m['fallback_overrun_rate'])} | "
        f"{_pct(med['overrun_rate'])} | {_pct(bk['overrun_rate'])} |\n"
    )
    n = info["new"]
    s += (
        f"\nCases of the two new surgeons only ({info['new_surgeon_cases']:,}; the fallback "
        "uses the booked minutes for them):\n\n"
        "| Figure | Model | Fallback |\n|---|---|---|\n"
        f"| MAE (min) | {_f(n['mae_minutes'], 1)} | {_f(n['fallback_mae_minutes'], 1)} |\n"
        f"| Bias (min) | {_f(n['bias_minutes'], 1)} | {_f(n['fallback_bias_minutes'], 1)} |\n"
        f"| Within ±10 % | {_pct(n['within_10pct'])} | {_pct(n['fallback_within_10pct'])} |\n"
        f"| Overrun rate | {_pct(n['overrun_rate'])} | {_pct(n['fallback_overrun_rate'])} |\n"
    )
    beats = (
        m["mae_minutes"] < m["fallback_mae_minutes"]
        and abs(m["bias_minutes"]) < abs(m["fallback_bias_minutes"])
        and m["within_10pct"] > m["fallback_within_10pct"]
        and m["overrun_rate"] < m["fallback_overrun_rate"]
    )
    s += (
        "\nAgainst the target set for this version (better than the fallback on MAE, |bias|, "
        f"share within ±10 % and overrun rate): {_met(beats)}. The margins on bias and overrun "
        "rate are narrow because both sides pad: the fallback by 20 %, the model by its "
        "planning percentile. The model's own median is more accurate on MAE "
        f"({_f(med['mae_minutes'], 1)} min) and bias but overruns half the time. The booked "
        "minutes alone are already a fair point estimate here (each surgeon books from a "
        "template of their own), but they overrun in most cases; the model's gain over them is "
        "in bias and overruns rather than in MAE. Most of the remaining error is case-to-case "
        "variation that none of the five inputs explains (log-scale spread of 0.2–0.3 by "
        "procedure in the generator).\n"
        "\n## Limitations\n\n"
        + LIMITATIONS_COMMON
        + "- Elective cases only; emergency cases, turnover between cases and anaesthesia "
        "induction are not modelled separately.\n"
        "- Procedure and surgeon codes are positions in this model's lists: a hospital must map "
        "its own procedure catalogue and staff onto them, and retrain when the lists change. "
        "New surgeons are predicted as an average surgeon until retraining.\n"
        "- The age and ASA effects are those built into the generator (longer cases for "
        "higher ASA classes and older patients), not effects measured in real data.\n"
        "\n## Version\n\n"
        f"{entry['version']} — first release, model set {set_version}.\n"
    )
    return s
