#!/usr/bin/env python3
"""Trains the appliance's two ONNX models on the seeded synthetic hospital and writes the set.

    python models/train/train.py --out models

writes, under --out:
    bed_demand.onnx, or_duration.onnx   the models (same seed -> byte-identical files)
    manifest.toml                       the set: files, sha256, signatures, metrics
    testvectors.json                    fixed inputs and the outputs ONNX Runtime gives for them
    cards/bed_demand.md, cards/or_duration.md
    test/slow.onnx, test/manifest.toml  a deliberately slow stand-in for or_duration

Graphs are written by hand with onnx.helper (default domain only, opset 17, IR version 8), so
the files carry nothing but the weights and the operators listed in the model cards.
"""

from __future__ import annotations

import os

# One BLAS thread: results that do not depend on the machine's core count, and a light load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from statistics import NormalDist  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.neural_network import MLPRegressor  # noqa: E402

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cards  # noqa: E402
import simulate as S  # noqa: E402

SEED = 20261101
SET_VERSION = "2026.11.1"
OPSET = 17
IR_VERSION = 8
HORIZONS = (24, 48, 72)

BED_FEATURES = [
    "census", "capacity", "arrivals_24h", "discharges_24h", "pending_admissions",
    "pending_discharges", "hour_sin", "hour_cos", "weekday_sin", "weekday_cos",
]
BED_OUTPUTS = [f"h{h}_{q}" for h in HORIZONS for q in ("lo", "mid", "hi")]
OR_FEATURES = ["booked_minutes", "age", "asa", "procedure_code", "surgeon_code"]
OR_OUTPUTS = ["minutes"]

BED_HIDDEN = (32, 32)
BED_FIT_ROWS = 200_000
BED_EPOCHS = 30
TARGET_SCALE = 5.0  # the network learns 5 x (change in occupied beds / capacity)
INTERVAL = (0.10, 0.90)
# The OR model answers a planning duration: the 75th percentile of the case's predicted
# log-normal duration (log-scale prediction plus z x the procedure's residual standard
# deviation), so that about one case in four runs over its plan. z = 0 would be the median.
OR_PLANNING_QUANTILE = 0.75
OR_PLANNING_Z = NormalDist().inv_cdf(OR_PLANNING_QUANTILE)


# --------------------------------------------------------------------------------------
# ONNX helpers
# --------------------------------------------------------------------------------------


def const(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.array(array, order="C"), name)


def finish_model(graph, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="hms-edge-models",
        producer_version=SET_VERSION,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, path: Path) -> str:
    data = model.SerializeToString(deterministic=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {"features": np.asarray(x, dtype=np.float32)})[0]


def io(n_in: int, out_name: str, n_out: int):
    return (
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_in]),
        helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", n_out]),
    )


# --------------------------------------------------------------------------------------
# Bed demand
# --------------------------------------------------------------------------------------


def bed_engineered(x: np.ndarray) -> np.ndarray:
    """The network's inputs, computed from the 10 features (the graph does the same)."""
    cap = np.maximum(x[:, 1:2], 1.0)
    return np.column_stack([
        x[:, [0, 2, 3, 4, 5]] / cap,
        x[:, 6:10],
        np.log(cap) / 3.0,
        x[:, 2:3] / np.maximum(x[:, 0:1], 1.0),
    ])


def bed_spread(x: np.ndarray) -> np.ndarray:
    """Interval scale: grows with the unit's turnover (admissions + discharges in 24 h)."""
    return np.sqrt(x[:, 2:3] + x[:, 3:4] + 2.0)


def bed_targets(beds: dict, hours: np.ndarray, n_units: int) -> np.ndarray:
    return np.concatenate(
        [np.stack([beds["census"][u, hours + h] for h in HORIZONS], axis=1) for u in range(n_units)]
    ).astype(np.float64)


def fit_bed(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    z = bed_engineered(x)
    delta = (y - x[:, 0:1]) / x[:, 1:2] * TARGET_SCALE
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(z))
    fit_idx, cal_idx = np.sort(order[:BED_FIT_ROWS]), np.sort(order[BED_FIT_ROWS:])
    mu, sd = z[fit_idx].mean(axis=0), z[fit_idx].std(axis=0)
    sd[sd < 1e-6] = 1.0
    net = MLPRegressor(
        hidden_layer_sizes=BED_HIDDEN, batch_size=512, max_iter=BED_EPOCHS,
        learning_rate_init=1e-3, alpha=1e-4, random_state=seed, shuffle=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit((z[fit_idx] - mu) / sd, delta[fit_idx])
    w = [c.astype(np.float64) for c in net.coefs_]
    b = [c.astype(np.float64) for c in net.intercepts_]
    # fold the standardisation into the first layer and the target scale into the last
    w0 = w[0] / sd[:, None]
    b0 = b[0] - (mu / sd) @ w[0]
    weights = [w0, w[1], w[2] / TARGET_SCALE]
    biases = [b0, b[1], b[2] / TARGET_SCALE]
    params = {"weights": [a.astype(np.float32) for a in weights],
              "biases": [a.astype(np.float32) for a in biases]}
    # residual quantiles on rows the network did not see, per horizon, per unit of spread
    mid = bed_mid_numpy(params, x[cal_idx])
    r = (y[cal_idx] - mid) / bed_spread(x[cal_idx])
    params["q_lo"] = np.minimum(np.quantile(r, INTERVAL[0], axis=0), 0.0).astype(np.float32)
    params["q_hi"] = np.maximum(np.quantile(r, INTERVAL[1], axis=0), 0.0).astype(np.float32)
    params["fit_rows"] = len(fit_idx)
    params["calibration_rows"] = len(cal_idx)
    params["epochs"] = int(net.n_iter_)
    return params


def bed_mid_numpy(params: dict, x: np.ndarray) -> np.ndarray:
    h = bed_engineered(x)
    for i, (w, b) in enumerate(zip(params["weights"], params["biases"])):
        h = h @ w.astype(np.float64) + b.astype(np.float64)
        if i < 2:
            h = np.maximum(h, 0.0)
    cap = x[:, 1:2]
    return np.clip(x[:, 0:1] + cap * h, 0.0, cap)


def bed_graph(params: dict) -> onnx.ModelProto:
    n = helper.make_node
    inits = [
        const("idx_census", np.array([0], np.int64)),
        const("idx_capacity", np.array([1], np.int64)),
        const("idx_arrivals", np.array([2], np.int64)),
        const("idx_discharges", np.array([3], np.int64)),
        const("idx_counts", np.array([0, 2, 3, 4, 5], np.int64)),
        const("idx_time", np.array([6, 7, 8, 9], np.int64)),
        const("one", np.array(1.0, np.float32)),
        const("two", np.array(2.0, np.float32)),
        const("three", np.array(3.0, np.float32)),
        const("zero", np.array(0.0, np.float32)),
        const("W1", params["weights"][0]), const("B1", params["biases"][0]),
        const("W2", params["weights"][1]), const("B2", params["biases"][1]),
        const("W3", params["weights"][2]), const("B3", params["biases"][2]),
        const("q_lo", params["q_lo"].reshape(1, 3)),
        const("q_hi", params["q_hi"].reshape(1, 3)),
        const("interleave", np.array([0, 3, 6, 1, 4, 7, 2, 5, 8], np.int64)),
    ]
    nodes = [
        n("Gather", ["features", "idx_census"], ["census"], axis=1),
        n("Gather", ["features", "idx_capacity"], ["capacity"], axis=1),
        n("Gather", ["features", "idx_arrivals"], ["arrivals"], axis=1),
        n("Gather", ["features", "idx_discharges"], ["discharges"], axis=1),
        n("Gather", ["features", "idx_counts"], ["counts"], axis=1),
        n("Gather", ["features", "idx_time"], ["time"], axis=1),
        n("Max", ["capacity", "one"], ["cap1"]),
        n("Div", ["counts", "cap1"], ["ratios"]),
        n("Log", ["cap1"], ["log_cap"]),
        n("Div", ["log_cap", "three"], ["log_cap3"]),
        n("Max", ["census", "one"], ["census1"]),
        n("Div", ["arrivals", "census1"], ["turnover"]),
        n("Concat", ["ratios", "time", "log_cap3", "turnover"], ["z"], axis=1),
        n("MatMul", ["z", "W1"], ["z1"]), n("Add", ["z1", "B1"], ["a1"]), n("Relu", ["a1"], ["h1"]),
        n("MatMul", ["h1", "W2"], ["z2"]), n("Add", ["z2", "B2"], ["a2"]), n("Relu", ["a2"], ["h2"]),
        n("MatMul", ["h2", "W3"], ["z3"]), n("Add", ["z3", "B3"], ["delta"]),
        n("Mul", ["delta", "capacity"], ["change"]),
        n("Add", ["census", "change"], ["mid_raw"]),
        n("Add", ["arrivals", "discharges"], ["moves"]),
        n("Add", ["moves", "two"], ["moves2"]),
        n("Sqrt", ["moves2"], ["spread"]),
        n("Mul", ["spread", "q_lo"], ["below"]),
        n("Mul", ["spread", "q_hi"], ["above"]),
        n("Max", ["mid_raw", "zero"], ["mid_pos"]), n("Min", ["mid_pos", "capacity"], ["mid"]),
        n("Add", ["mid", "below"], ["lo_raw"]),
        n("Max", ["lo_raw", "zero"], ["lo_pos"]), n("Min", ["lo_pos", "capacity"], ["lo"]),
        n("Add", ["mid", "above"], ["hi_raw"]),
        n("Max", ["hi_raw", "zero"], ["hi_pos"]), n("Min", ["hi_pos", "capacity"], ["hi"]),
        n("Concat", ["lo", "mid", "hi"], ["grouped"], axis=1),
        n("Gather", ["grouped", "interleave"], ["forecast"], axis=1),
    ]
    inp, out = io(10, "forecast", 9)
    graph = helper.make_graph(nodes, "bed_demand", [inp], [out], initializer=inits)
    return finish_model(
        graph,
        "Occupied beds of one unit 24/48/72 h ahead: 10th percentile, point forecast, 90th "
        "percentile per horizon. Input order: " + ", ".join(BED_FEATURES) + ".",
    )


def bed_metrics(pred: np.ndarray, fallback: np.ndarray, y: np.ndarray, n_units: int) -> dict:
    """pred: [rows, 9] model output; fallback, y: [rows, 3]; rows unit-major."""
    m: dict[str, float] = {}
    for k, h in enumerate(HORIZONS):
        lo, mid, hi = pred[:, 3 * k], pred[:, 3 * k + 1], pred[:, 3 * k + 2]
        yt = y[:, k]
        y_h = yt.reshape(n_units, -1).sum(axis=0)
        for tag, p in (("", mid), ("fallback_", fallback[:, k])):
            p_h = p.reshape(n_units, -1).sum(axis=0)
            m[f"{tag}mape_{h}h_hospital"] = float(np.mean(np.abs(p_h - y_h) / y_h) * 100)
            m[f"{tag}mae_{h}h_hospital_beds"] = float(np.mean(np.abs(p_h - y_h)))
            m[f"{tag}mae_{h}h_unit_beds"] = float(np.mean(np.abs(p - yt)))
            m[f"{tag}bias_{h}h_hospital_beds"] = float(np.mean(p_h - y_h))
        m[f"coverage_80_{h}h_unit"] = float(np.mean((yt >= lo) & (yt <= hi)))
        m[f"interval_width_{h}h_unit_beds"] = float(np.mean(hi - lo))
    return m


# --------------------------------------------------------------------------------------
# Operating-room case duration
# --------------------------------------------------------------------------------------


def or_design(x: np.ndarray, n_proc: int, n_surg: int) -> np.ndarray:
    booked, age, asa = x[:, 0], x[:, 1], np.clip(np.round(x[:, 2]), 1, 4).astype(int)
    proc, surg = x[:, 3].astype(int), x[:, 4].astype(int)
    cols = [np.log(np.maximum(booked, 5.0)), age / 100.0, np.maximum(age - 60.0, 0.0) / 100.0]
    cols += [(asa == a).astype(float) for a in range(1, 5)]
    cols += [(proc == p).astype(float) for p in range(n_proc)]
    cols += [(surg == s).astype(float) for s in range(n_surg)]
    return np.column_stack(cols)


def fit_or(x: np.ndarray, actual: np.ndarray, n_proc: int, n_surg: int) -> dict:
    d = or_design(x, n_proc, n_surg)
    y = np.log(actual)
    model = Ridge(alpha=1.0).fit(d, y)
    coef = model.coef_.astype(np.float64)
    intercept = float(model.intercept_)
    a_lb, a_age, a_old = coef[0], coef[1] / 100.0, coef[2] / 100.0
    asa_eff = coef[3:7].copy()
    proc_eff = coef[7:7 + n_proc].copy()
    surg_eff = coef[7 + n_proc:].copy()
    # an unknown procedure or surgeon counts as the average one: centre the effects on the
    # training mix and move the means into the intercept
    proc_count = np.bincount(x[:, 3].astype(int), minlength=n_proc)
    surg_count = np.bincount(x[:, 4].astype(int), minlength=n_surg)
    pm = float(proc_eff @ proc_count / proc_count.sum())
    sm = float(surg_eff @ surg_count / surg_count.sum())
    proc_eff -= pm
    surg_eff -= sm
    intercept += pm + sm
    resid = y - model.predict(d)
    proc = x[:, 3].astype(int)
    pooled = float(resid.std(ddof=1))
    sigma = np.array([resid[proc == p].std(ddof=1) if (proc == p).sum() > 20 else pooled
                      for p in range(n_proc)])
    return {
        "intercept": intercept, "log_booked": a_lb, "age": a_age, "age_over_60": a_old,
        "asa": asa_eff, "procedure": proc_eff, "surgeon": surg_eff,
        "sigma": sigma, "sigma_pooled": pooled, "z": OR_PLANNING_Z,
    }


def or_graph(p: dict) -> onnx.ModelProto:
    n = helper.make_node
    n_proc, n_surg = len(p["procedure"]), len(p["surgeon"])
    f32 = np.float32
    # lookup tables get one extra last entry for "unknown"
    proc_table = np.append(p["procedure"], 0.0).astype(f32)
    surg_table = np.append(p["surgeon"], 0.0).astype(f32)
    spread_table = (p["z"] * np.append(p["sigma"], p["sigma_pooled"])).astype(f32)
    inits = [
        const("idx_booked", np.array([0], np.int64)),
        const("idx_age", np.array([1], np.int64)),
        const("idx_asa", np.array([2], np.int64)),
        const("idx_proc", np.array([3], np.int64)),
        const("idx_surg", np.array([4], np.int64)),
        const("five", np.array(5.0, f32)),
        const("sixty", np.array(60.0, f32)),
        const("zero", np.array(0.0, f32)),
        const("asa_min", np.array(1.0, f32)),
        const("asa_max", np.array(4.0, f32)),
        const("i_zero", np.array(0, np.int64)),
        const("i_one", np.array(1, np.int64)),
        const("n_proc", np.array(n_proc, np.int64)),
        const("n_surg", np.array(n_surg, np.int64)),
        const("c_intercept", np.array(p["intercept"], f32)),
        const("c_log_booked", np.array(p["log_booked"], f32)),
        const("c_age", np.array(p["age"], f32)),
        const("c_age_over_60", np.array(p["age_over_60"], f32)),
        const("asa_table", p["asa"].astype(f32)),
        const("procedure_table", proc_table),
        const("surgeon_table", surg_table),
        const("spread_table", spread_table),
    ]
    nodes = [
        n("Gather", ["features", "idx_booked"], ["booked"], axis=1),
        n("Gather", ["features", "idx_age"], ["age"], axis=1),
        n("Gather", ["features", "idx_asa"], ["asa"], axis=1),
        n("Gather", ["features", "idx_proc"], ["proc"], axis=1),
        n("Gather", ["features", "idx_surg"], ["surg"], axis=1),
        # log booked minutes (at least 5)
        n("Max", ["booked", "five"], ["booked5"]),
        n("Log", ["booked5"], ["log_booked"]),
        n("Mul", ["log_booked", "c_log_booked"], ["t_booked"]),
        # age, linear and above 60
        n("Mul", ["age", "c_age"], ["t_age"]),
        n("Sub", ["age", "sixty"], ["age60"]),
        n("Max", ["age60", "zero"], ["age60p"]),
        n("Mul", ["age60p", "c_age_over_60"], ["t_old"]),
        # ASA class 1..4 (rounded, clamped) -> table row 0..3
        n("Round", ["asa"], ["asa_r"]),
        n("Max", ["asa_r", "asa_min"], ["asa_lo"]),
        n("Min", ["asa_lo", "asa_max"], ["asa_c"]),
        n("Cast", ["asa_c"], ["asa_i"], to=TensorProto.INT64),
        n("Sub", ["asa_i", "i_one"], ["asa_row"]),
        n("Gather", ["asa_table", "asa_row"], ["t_asa"], axis=0),
        # procedure and surgeon codes: anything outside 0..n-1 (e.g. -1) is "unknown"
        n("Round", ["proc"], ["proc_r"]),
        n("Cast", ["proc_r"], ["proc_i"], to=TensorProto.INT64),
        n("GreaterOrEqual", ["proc_i", "i_zero"], ["proc_ge"]),
        n("Less", ["proc_i", "n_proc"], ["proc_lt"]),
        n("And", ["proc_ge", "proc_lt"], ["proc_ok"]),
        n("Where", ["proc_ok", "proc_i", "n_proc"], ["proc_row"]),
        n("Gather", ["procedure_table", "proc_row"], ["t_proc"], axis=0),
        n("Gather", ["spread_table", "proc_row"], ["t_spread"], axis=0),
        n("Round", ["surg"], ["surg_r"]),
        n("Cast", ["surg_r"], ["surg_i"], to=TensorProto.INT64),
        n("GreaterOrEqual", ["surg_i", "i_zero"], ["surg_ge"]),
        n("Less", ["surg_i", "n_surg"], ["surg_lt"]),
        n("And", ["surg_ge", "surg_lt"], ["surg_ok"]),
        n("Where", ["surg_ok", "surg_i", "n_surg"], ["surg_row"]),
        n("Gather", ["surgeon_table", "surg_row"], ["t_surg"], axis=0),
        # sum on the log scale, then back to minutes
        n("Sum", ["c_intercept", "t_booked", "t_age", "t_old", "t_asa", "t_proc", "t_surg",
                  "t_spread"], ["log_minutes"]),
        n("Exp", ["log_minutes"], ["minutes"]),
    ]
    inp, out = io(5, "minutes", 1)
    graph = helper.make_graph(nodes, "or_duration", [inp], [out], initializer=inits)
    return finish_model(
        graph,
        "Planning duration of an elective operating-room case in minutes. Input order: "
        + ", ".join(OR_FEATURES) + "; codes index the manifest's procedures and surgeons, "
        "-1 = unknown.",
    )


def or_metrics(pred: np.ndarray, actual: np.ndarray, tag: str = "") -> dict:
    err = pred - actual
    return {
        f"{tag}mae_minutes": float(np.mean(np.abs(err))),
        f"{tag}bias_minutes": float(np.mean(err)),
        f"{tag}within_10pct": float(np.mean(np.abs(err) <= 0.1 * actual)),
        f"{tag}overrun_rate": float(np.mean(actual > pred)),
    }


def or_fallback(x: np.ndarray, surgeon_mean: np.ndarray) -> np.ndarray:
    s = x[:, 4].astype(int)
    known = (s >= 0) & (s < len(surgeon_mean))
    return np.where(known, surgeon_mean[np.clip(s, 0, len(surgeon_mean) - 1)] * 1.2, x[:, 0])


# --------------------------------------------------------------------------------------
# Slow stand-in
# --------------------------------------------------------------------------------------

SLOW_ITERATIONS = 1_000_000
SLOW_SIZE = 64


def slow_graph() -> onnx.ModelProto:
    """or_duration's signature; a Loop of small matrix products that runs one after another,
    so extra threads do not make it faster. Weights are made in the graph (tiny file)."""
    n = helper.make_node
    f32 = np.float32
    body = helper.make_graph(
        [
            n("MatMul", ["state_in", "weights"], ["product"]),
            n("Tanh", ["product"], ["state_out"]),
            n("Identity", ["cond_in"], ["cond_out"]),
        ],
        "slow_body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None),
        ],
    )
    inits = [
        const("square", np.array([SLOW_SIZE, SLOW_SIZE], np.int64)),
        const("trips", np.array(SLOW_ITERATIONS, np.int64)),
        const("keep_going", np.array(True)),
        const("small", np.array(1e-3, f32)),
        const("half", np.array(0.5, f32)),
        const("idx_booked", np.array([0], np.int64)),
        const("zero", np.array(0.0, f32)),
        const("hundred", np.array(100.0, f32)),
    ]
    nodes = [
        n("ConstantOfShape", ["square"], ["weights"],
          value=helper.make_tensor("w", TensorProto.FLOAT, [1], [1.5 / SLOW_SIZE])),
        n("ReduceMean", ["features"], ["level"], keepdims=0),
        n("Mul", ["level", "small"], ["level_small"]),
        n("Tanh", ["level_small"], ["level_bounded"]),
        n("Add", ["level_bounded", "half"], ["start"]),
        n("Expand", ["start", "square"], ["state0"]),
        n("Loop", ["trips", "keep_going", "state0"], ["state_final"], body=body),
        n("ReduceMean", ["state_final"], ["result"], keepdims=0),
        n("Gather", ["features", "idx_booked"], ["booked"], axis=1),
        n("Mul", ["booked", "zero"], ["nothing"]),
        n("Mul", ["result", "hundred"], ["answer"]),
        n("Add", ["nothing", "answer"], ["minutes"]),
    ]
    inp, out = io(5, "minutes", 1)
    graph = helper.make_graph(nodes, "or_duration_slow", [inp], [out], initializer=inits)
    return finish_model(graph, "Test only: or_duration's signature, deliberately slow.")


# --------------------------------------------------------------------------------------
# Manifest, test vectors
# --------------------------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(round(float(v), 4))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    raise TypeError(type(v))


def model_toml(entry: dict) -> str:
    lines = ["[[model]]"]
    for key, value in entry.items():
        if key == "metrics":
            continue
        if key in ("input", "output"):
            lines.append(
                f'{key} = {{ name = "{value["name"]}", type = "float32", '
                f"shape = {toml_value(value['shape'])} }}"
            )
        else:
            lines.append(f"{key} = {toml_value(value)}")
    lines.append("")
    lines.append("[model.metrics]")
    for key, value in entry["metrics"].items():
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_manifest(path: Path, version: str, entries: list[dict], header: str) -> None:
    text = header + f'version = "{version}"\n\n' + "\n".join(model_toml(e) for e in entries)
    path.write_text(text)


# --------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    sim = S.simulate(args.seed)
    units, beds, cases, surgeons = sim["units"], sim["beds"], sim["cases"], sim["surgeons"]
    n_units = len(units)
    print(f"simulated {n_units} units, {sum(u.beds for u in units)} beds, "
          f"{len(cases['day'])} cases in {time.time() - t0:.1f}s")

    # ---------------- bed demand
    train_hours = np.arange(S.hour_index(S.TRAIN_START), S.hour_index(S.HELDOUT_START) - max(HORIZONS))
    test_hours = np.arange(S.hour_index(S.HELDOUT_START), S.hour_index(S.HELDOUT_END))
    x_tr = S.unit_features(beds, units, train_hours)
    y_tr = bed_targets(beds, train_hours, n_units)
    x_te = S.unit_features(beds, units, test_hours)
    y_te = bed_targets(beds, test_hours, n_units)

    # fallback: mean occupied beds by unit x weekday x hour over the training year
    year = np.arange(S.hour_index(S.TRAIN_START), S.hour_index(S.HELDOUT_START))
    wd, hd = S.weekday_of_hour(year), S.hour_of_day(year)
    profile = np.zeros((n_units, 7, 24))
    count = np.zeros((7, 24))
    np.add.at(count, (wd, hd), 1)
    for u in range(n_units):
        np.add.at(profile[u], (wd, hd), beds["census"][u, year])
    profile /= count
    fallback = np.concatenate([
        np.stack([profile[u][S.weekday_of_hour(test_hours + h), S.hour_of_day(test_hours + h)]
                  for h in HORIZONS], axis=1)
        for u in range(n_units)
    ])

    t1 = time.time()
    bed_params = fit_bed(x_tr, y_tr, args.seed)
    bed_fit_s = time.time() - t1
    bed_path = out / "bed_demand.onnx"
    bed_sha = save(bed_graph(bed_params), bed_path)
    bed_sess = session(bed_path)
    bed_pred = run(bed_sess, x_te).astype(np.float64)
    bm = bed_metrics(bed_pred, fallback, y_te, n_units)
    # unit-level 24 h MAE per unit type, for the card
    types = [u.type.code for u in units]
    rows_per_unit = len(test_hours)
    by_type = {}
    for code in dict.fromkeys(types):
        sel = np.concatenate([np.arange(i * rows_per_unit, (i + 1) * rows_per_unit)
                              for i, t in enumerate(types) if t == code])
        by_type[code] = (
            float(np.mean(np.abs(bed_pred[sel, 1] - y_te[sel, 0]))),
            float(np.mean(np.abs(fallback[sel, 0] - y_te[sel, 0]))),
            float(np.mean((y_te[sel, 0] >= bed_pred[sel, 0]) & (y_te[sel, 0] <= bed_pred[sel, 2]))),
        )
    cap = np.array([u.beds for u in units])
    year_slice = slice(year[0], year[-1] + 1)
    bed_info = {
        "train_rows": len(x_tr), "fit_rows": bed_params["fit_rows"],
        "calibration_rows": bed_params["calibration_rows"], "heldout_rows": len(x_te),
        "epochs": bed_params["epochs"], "fit_seconds": bed_fit_s,
        "units": n_units, "beds": int(cap.sum()),
        "occupancy_train": float(beds["census"][:, year_slice].sum(0).mean() / cap.sum()),
        "by_type": by_type, "q_lo": bed_params["q_lo"], "q_hi": bed_params["q_hi"],
        "diverted": int(beds["diverted"].sum()), "cancelled": int(beds["cancelled"].sum()),
        "emergency": int(beds["emergency_total"].sum()),
    }
    print(f"bed_demand: fitted in {bed_fit_s:.1f}s; " + ", ".join(
        f"{k}={v:.3f}" for k, v in bm.items() if "24h" in k))

    # ---------------- OR duration
    day0, day1, day2 = ((d - S.START).days for d in (S.TRAIN_START, S.HELDOUT_START, S.HELDOUT_END))
    n_proc, n_surg = len(S.PROCEDURES), 30
    cx = np.column_stack([cases["booked"], cases["age"], cases["asa"], cases["procedure"],
                          np.where(cases["surgeon"] < n_surg, cases["surgeon"], -1)]).astype(np.float64)
    tr = (cases["day"] >= day0) & (cases["day"] < day1)
    te = (cases["day"] >= day1) & (cases["day"] < day2)
    t1 = time.time()
    or_params = fit_or(cx[tr], cases["actual"][tr], n_proc, n_surg)
    or_fit_s = time.time() - t1
    surgeon_mean = np.array([cases["actual"][tr & (cases["surgeon"] == s)].mean() for s in range(n_surg)])
    or_path = out / "or_duration.onnx"
    or_sha = save(or_graph(or_params), or_path)
    or_sess = session(or_path)
    or_pred = run(or_sess, cx[te])[:, 0].astype(np.float64)
    or_fb = or_fallback(cx[te], surgeon_mean)
    actual_te = cases["actual"][te]
    om = {**or_metrics(or_pred, actual_te), **or_metrics(or_fb, actual_te, "fallback_")}
    new = cx[te][:, 4] < 0
    om_new = {**or_metrics(or_pred[new], actual_te[new]), **or_metrics(or_fb[new], actual_te[new], "fallback_")}
    booked_te = cx[te][:, 0]
    om_booked = or_metrics(booked_te, actual_te)
    # the same model's median (no planning margin), for the card
    proc_te = cx[te][:, 3].astype(int)
    spread = or_params["z"] * np.append(or_params["sigma"], or_params["sigma_pooled"])[proc_te]
    om_median = or_metrics(or_pred * np.exp(-spread), actual_te)
    or_info = {
        "train_cases": int(tr.sum()), "heldout_cases": int(te.sum()), "new_surgeon_cases": int(new.sum()),
        "fit_seconds": or_fit_s, "new": om_new, "booked": om_booked, "median": om_median,
        "underbooking": float(1.0 - cases["booked"][tr].sum() / cases["actual"][tr].sum()),
        "params": or_params,
    }
    print("or_duration: " + ", ".join(f"{k}={v:.3f}" for k, v in om.items()))

    # ---------------- test vectors
    pick_units = [0, 2, 14, 17, 21, 26, 30, 33, 35, 37]
    pick_hours = [3, 150, 1000, 1800, 2300, 2900, 3500, 4100, 333, 2711]
    bed_rows = [x_te[u * rows_per_unit + h] for u, h in zip(pick_units, pick_hours)]
    bed_rows.append(np.array([0, 20, 0, 0, 0, 0, 0, 1, 0, 1], float))  # empty unit, Monday 00:00
    bed_rows.append(np.array([28, 28, 9, 5, 3, 6, np.sin(2 * np.pi * 14 / 24), np.cos(2 * np.pi * 14 / 24),
                              np.sin(2 * np.pi * 4 / 7), np.cos(2 * np.pi * 4 / 7)], float))  # full
    bed_in = np.array(bed_rows, dtype=np.float32)
    te_idx = np.flatnonzero(te)
    picks = [te_idx[i] for i in (0, 97, 480, 1203, 2210, 3333, 4100, 5005)]
    or_rows = [cx[i] for i in picks]
    or_rows.append(np.array([120, 67, 3, 6, -1], float))  # unknown surgeon
    or_rows.append(np.array([90, 45, 2, -1, 4], float))  # unknown procedure
    or_rows.append(np.array([240, 80, 4, 17, -1], float))  # both known-ish: cardiac, new surgeon
    or_in = np.array(or_rows, dtype=np.float32)
    # Largest absolute difference per value allowed against the recorded outputs
    # (models/README.md); also each model's `tolerance` in the manifest.
    tolerance = 1e-3
    vectors = {
        "tolerance": tolerance,
        "bed_demand": {"inputs": bed_in.tolist(), "outputs": run(bed_sess, bed_in).tolist()},
        "or_duration": {"inputs": or_in.tolist(), "outputs": run(or_sess, or_in).tolist()},
    }
    (out / "testvectors.json").write_text(json.dumps(vectors, indent=1) + "\n")

    # ---------------- manifest
    def rounded(d):
        return {k: round(float(v), 4) for k, v in d.items()}

    bed_entry = {
        "name": "bed_demand", "file": bed_path.name, "sha256": bed_sha, "version": "1.0.0",
        "opset": OPSET, "ir_version": IR_VERSION, "training_seed": args.seed,
        "input": {"name": "features", "shape": [-1, 10]},
        "output": {"name": "forecast", "shape": [-1, 9]},
        "features": BED_FEATURES, "outputs": BED_OUTPUTS, "tolerance": tolerance,
        "metrics": {**rounded(bm), "heldout_rows": len(x_te), "train_rows": len(x_tr),
                    "interval_low_quantile": INTERVAL[0], "interval_high_quantile": INTERVAL[1]},
    }
    or_entry = {
        "name": "or_duration", "file": or_path.name, "sha256": or_sha, "version": "1.0.0",
        "opset": OPSET, "ir_version": IR_VERSION, "training_seed": args.seed,
        "input": {"name": "features", "shape": [-1, 5]},
        "output": {"name": "minutes", "shape": [-1, 1]},
        "features": OR_FEATURES, "outputs": OR_OUTPUTS,
        "procedures": [p.code for p in S.PROCEDURES],
        "surgeons": [s.code for s in surgeons[:n_surg]],
        "surgeon_mean_minutes": [round(float(v), 1) for v in surgeon_mean],
        "tolerance": tolerance,
        "metrics": {**rounded(om), **{f"new_surgeon_{k}": v for k, v in rounded(om_new).items()},
                    "heldout_cases": or_info["heldout_cases"], "train_cases": or_info["train_cases"],
                    "planning_quantile": OR_PLANNING_QUANTILE},
    }
    header = (
        "# HMS Edge model set. Written by models/train/train.py; do not edit by hand.\n"
        "# Metrics are held-out figures on generated data (see cards/).\n"
    )
    write_manifest(out / "manifest.toml", SET_VERSION, [bed_entry, or_entry], header)

    # ---------------- slow stand-in for timeout tests
    slow_path = out / "test" / "slow.onnx"
    slow_sha = save(slow_graph(), slow_path)
    slow_entry = {**or_entry, "file": "slow.onnx", "sha256": slow_sha, "version": "0.0.0-slow",
                  "metrics": {"slow_loop_iterations": SLOW_ITERATIONS}}
    write_manifest(
        out / "test" / "manifest.toml", SET_VERSION + "-test", [slow_entry],
        "# Test set: or_duration's signature, deliberately slow (see models/README.md).\n"
        "# Written by models/train/train.py.\n",
    )

    # ---------------- cards
    (out / "cards").mkdir(exist_ok=True)
    (out / "cards" / "bed_demand.md").write_text(cards.bed_card(bm, bed_info, args.seed, bed_entry, SET_VERSION))
    (out / "cards" / "or_duration.md").write_text(cards.or_card(om, or_info, args.seed, or_entry, SET_VERSION))

    for p in (bed_path, or_path, slow_path):
        print(f"{p.relative_to(out)}: {p.stat().st_size} bytes, sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
