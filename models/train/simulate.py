"""Seeded synthetic hospital: bed census by unit (hourly) and operating-room cases.

Everything here is generated; nothing comes from a real hospital. The parameters are set
so that the aggregate behaviour lands inside published ranges (see README.md in this folder):
occupancy, length of stay, the daily shape of admissions and discharges, weekend and winter
effects, and log-normal case durations that booked durations tend to underestimate.

The simulation is deterministic for a given seed: every random draw comes from generators
derived from one `numpy.random.SeedSequence`, and draws happen in a fixed order.

Time is counted in whole hours from `START` (00:00 local, no daylight-saving changes).
"Boundary t" is the instant at which hour t begins; a patient admitted during hour a and
discharged during hour d occupies a bed at the boundaries a+1 .. d.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

START = dt.date(2024, 11, 1)  # warm-up begins; the first two months are discarded
TRAIN_START = dt.date(2025, 1, 1)
HELDOUT_START = dt.date(2026, 1, 1)
HELDOUT_END = dt.date(2026, 7, 1)  # exclusive
END = dt.date(2026, 7, 6)  # simulation stops here (room for 72 h targets after HELDOUT_END)
NEW_SURGEONS_FROM = dt.date(2026, 3, 2)  # two surgeons join during the held-out period


def hour_index(day: dt.date) -> int:
    return (day - START).days * 24


N_HOURS = hour_index(END)


def weekday_of_hour(t: np.ndarray | int):
    """0 = Monday."""
    return (START.weekday() + np.asarray(t) // 24) % 7


def hour_of_day(t: np.ndarray | int):
    return np.asarray(t) % 24


# --------------------------------------------------------------------------------------
# Daily and weekly shapes
# --------------------------------------------------------------------------------------

# Emergency admissions by hour of day (relative weights). Emergency-department arrivals rise
# from about 08:00 and stay high until the evening; admission to a ward follows a few hours
# later, so ward admissions peak from early afternoon to late evening and are lowest at dawn.
EMERGENCY_HOUR_WEIGHTS = np.array(
    [0.55, 0.45, 0.38, 0.32, 0.30, 0.30, 0.35, 0.45, 0.60, 0.80, 1.00, 1.15,
     1.30, 1.45, 1.55, 1.60, 1.62, 1.60, 1.55, 1.45, 1.30, 1.10, 0.90, 0.70]
)
EMERGENCY_HOUR_WEIGHTS = EMERGENCY_HOUR_WEIGHTS / EMERGENCY_HOUR_WEIGHTS.sum()

# Emergency admissions by weekday (Monday first): a Monday peak, a weekend dip.
EMERGENCY_WEEKDAY = np.array([1.08, 1.03, 1.01, 1.00, 0.99, 0.95, 0.94])
EMERGENCY_WEEKDAY = EMERGENCY_WEEKDAY / EMERGENCY_WEEKDAY.mean()

# Discharge hour of day on wards: few before 09:00, most between 11:00 and 15:00.
DISCHARGE_HOUR_WEIGHTS = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.9, 2.0, 4.0, 7.0,
     9.0, 9.5, 8.5, 7.0, 5.0, 3.6, 2.6, 1.8, 1.2, 0.8, 0.5, 0.3]
)
DISCHARGE_HOUR_WEIGHTS = DISCHARGE_HOUR_WEIGHTS / DISCHARGE_HOUR_WEIGHTS.sum()
# Critical care step-downs and transfers happen around the clock, with a daytime bias.
ICU_DISCHARGE_HOUR_WEIGHTS = 0.5 * DISCHARGE_HOUR_WEIGHTS + 0.5 / 24

# Probability that a discharge planned for a Saturday / Sunday slips to the next day.
WEEKEND_SLIP = {5: 0.35, 6: 0.45}


def seasonal_factor(day_index: np.ndarray) -> np.ndarray:
    """Emergency demand by day of year: highest in mid-January, lowest in mid-July (+/-7 %)."""
    days = np.array([(START + dt.timedelta(days=int(d))).timetuple().tm_yday for d in day_index])
    return 1.0 + 0.07 * np.cos(2.0 * math.pi * (days - 15) / 365.25)


# --------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitType:
    code: str
    description: str
    count: int
    beds: int
    los_mean_days: float  # emergency patients
    los_log_sd: float
    target_occupancy: float
    icu: bool = False


UNIT_TYPES = [
    UnitType("AMU", "acute medical unit (short stay)", 2, 36, 1.2, 0.7, 0.86),
    UnitType("MED", "general medicine", 12, 28, 5.0, 0.8, 0.89),
    UnitType("COE", "care of the elderly", 3, 28, 7.5, 0.8, 0.91),
    UnitType("CARD", "cardiology", 2, 24, 3.5, 0.7, 0.85),
    UnitType("ONC", "oncology", 1, 24, 6.0, 0.8, 0.86),
    UnitType("SURG", "general surgery", 5, 28, 4.5, 0.8, 0.85),
    UnitType("ORTH", "orthopaedics and trauma", 4, 28, 7.0, 0.7, 0.87),
    UnitType("NEUR", "neurosurgery", 1, 24, 6.0, 0.8, 0.84),
    UnitType("GYN", "gynaecology", 1, 26, 2.5, 0.7, 0.78),
    UnitType("MAT", "maternity", 2, 30, 2.2, 0.5, 0.72),
    UnitType("PAED", "paediatrics", 2, 24, 2.0, 0.8, 0.72),
    UnitType("ICU", "adult intensive care", 2, 16, 3.5, 0.9, 0.80, icu=True),
    UnitType("CICU", "cardiothoracic intensive care", 1, 14, 2.5, 0.8, 0.78, icu=True),
]


@dataclass(frozen=True)
class Unit:
    name: str
    type: UnitType
    beds: int


def make_units() -> list[Unit]:
    units = []
    for ut in UNIT_TYPES:
        for i in range(ut.count):
            units.append(Unit(f"{ut.code}-{i + 1}", ut, ut.beds))
    return units


# --------------------------------------------------------------------------------------
# Procedures and surgeons
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Procedure:
    code: str
    specialty: str
    mean_minutes: float  # mean actual duration for an average surgeon and patient
    log_sd: float  # case-to-case spread on the log scale
    inpatient: float  # share of cases admitted to a bed (the rest are day cases)
    los_mean_days: float  # post-operative stay of inpatients
    unit: str  # unit type that receives inpatients
    age_mean: float
    age_sd: float
    weight: float  # relative frequency within the specialty


PROCEDURES = [
    Procedure("laparoscopic_cholecystectomy", "general", 85, 0.26, 0.45, 1.5, "SURG", 52, 15, 3.0),
    Procedure("inguinal_hernia_repair", "general", 70, 0.24, 0.20, 1.2, "SURG", 58, 15, 3.0),
    Procedure("colectomy", "general", 210, 0.28, 1.00, 6.5, "SURG", 64, 12, 1.5),
    Procedure("gastric_bypass", "general", 150, 0.22, 1.00, 2.5, "SURG", 44, 10, 1.0),
    Procedure("thyroidectomy", "general", 115, 0.25, 0.90, 1.5, "SURG", 50, 14, 1.0),
    Procedure("mastectomy", "general", 125, 0.27, 0.80, 2.0, "SURG", 58, 12, 1.2),
    Procedure("total_hip_replacement", "orthopaedics", 110, 0.22, 1.00, 3.5, "ORTH", 68, 10, 3.0),
    Procedure("total_knee_replacement", "orthopaedics", 105, 0.20, 1.00, 3.5, "ORTH", 67, 9, 3.0),
    Procedure("knee_arthroscopy", "orthopaedics", 50, 0.30, 0.10, 1.0, "ORTH", 42, 14, 2.0),
    Procedure("spinal_fusion", "orthopaedics", 220, 0.30, 1.00, 5.0, "ORTH", 58, 13, 1.0),
    Procedure("carpal_tunnel_release", "orthopaedics", 30, 0.28, 0.00, 0.0, "ORTH", 55, 13, 1.5),
    Procedure("cataract_extraction", "ophthalmology", 28, 0.25, 0.00, 0.0, "SURG", 73, 9, 1.0),
    Procedure("tonsillectomy", "ent", 45, 0.28, 0.35, 1.0, "PAED", 14, 10, 1.0),
    Procedure("abdominal_hysterectomy", "gynaecology", 135, 0.25, 1.00, 2.5, "GYN", 49, 9, 1.0),
    Procedure("caesarean_section", "gynaecology", 55, 0.22, 1.00, 2.8, "MAT", 32, 5, 1.2),
    Procedure("radical_prostatectomy", "urology", 185, 0.26, 1.00, 2.5, "SURG", 63, 7, 1.0),
    Procedure("transurethral_prostate_resection", "urology", 65, 0.25, 0.85, 1.8, "SURG", 70, 8, 1.5),
    Procedure("coronary_artery_bypass", "cardiac", 270, 0.20, 1.00, 3.0, "CICU", 66, 9, 1.5),
    Procedure("aortic_valve_replacement", "cardiac", 240, 0.22, 1.00, 3.0, "CICU", 70, 9, 1.0),
    Procedure("craniotomy", "neurosurgery", 235, 0.30, 1.00, 6.0, "NEUR", 54, 15, 1.0),
]

# Surgeons per specialty (30 in all) and how many operating days a week each has.
SPECIALTY_SURGEONS = [
    ("general", 8), ("orthopaedics", 7), ("ophthalmology", 2), ("ent", 2),
    ("gynaecology", 4), ("urology", 3), ("cardiac", 2), ("neurosurgery", 2),
]

# Log-scale duration shift by ASA physical status class 1..4.
ASA_EFFECT = np.array([-0.04, 0.0, 0.07, 0.16])
# Log-scale duration shift per year of age above 60.
AGE_EFFECT_PER_YEAR = 0.004
# Booked durations come from the surgeon's template: on average ~15 % short of the actual.
BOOKING_FACTOR = 0.92
LIST_MINUTES = 480  # a full operating list


@dataclass
class Surgeon:
    code: str
    specialty: str
    effect: float  # log-scale speed (positive = slower)
    booking_habit: float  # log-scale factor on this surgeon's booking templates
    days: tuple  # weekdays with an operating list
    interaction: dict  # procedure -> log-scale procedure x surgeon effect
    start: dt.date


def make_surgeons(rng: np.random.Generator) -> list[Surgeon]:
    surgeons = []
    n = 0
    for specialty, count in SPECIALTY_SURGEONS + [("general", 1), ("orthopaedics", 1)]:
        for _ in range(count):
            n += 1
            new = n > 30
            procs = [p.code for p in PROCEDURES if p.specialty == specialty]
            n_days = int(rng.choice([3, 4, 4, 5]))
            days = tuple(sorted(rng.choice(5, size=n_days, replace=False).tolist()))
            surgeons.append(
                Surgeon(
                    code=f"S{n:02d}",
                    specialty=specialty,
                    effect=float(rng.normal(0.0, 0.14)) + (0.08 if new else 0.0),
                    booking_habit=float(rng.normal(0.0, 0.06)),
                    days=days,
                    interaction={p: float(rng.normal(0.0, 0.06)) for p in procs},
                    start=NEW_SURGEONS_FROM if new else START,
                )
            )
    return surgeons


def _sample_asa(rng: np.random.Generator, age: float) -> int:
    latent = 0.035 * (age - 50.0) + rng.normal()
    return 1 if latent < -0.8 else 2 if latent < 0.5 else 3 if latent < 1.6 else 4


def simulate_cases(rng: np.random.Generator, surgeons: list[Surgeon]) -> dict:
    """Elective operating lists on weekdays, every surgeon on their days, until END."""
    proc_index = {p.code: i for i, p in enumerate(PROCEDURES)}
    rows = []
    n_days = (END - START).days
    for d in range(n_days):
        day = START + dt.timedelta(days=d)
        wd = day.weekday()
        if wd >= 5:
            continue
        for s in surgeons:
            if day < s.start or wd not in s.days:
                continue
            if rng.random() < 0.12:  # leave, conferences, cancelled lists
                continue
            procs = [p for p in PROCEDURES if p.specialty == s.specialty]
            weights = np.array([p.weight for p in procs])
            weights = weights / weights.sum()
            booked_total = 0
            while True:
                p = procs[int(rng.choice(len(procs), p=weights))]
                age = float(np.clip(rng.normal(p.age_mean, p.age_sd), 1, 95))
                age = float(round(age))
                asa = _sample_asa(rng, age)
                template = p.mean_minutes * BOOKING_FACTOR * math.exp(0.5 * s.effect + s.booking_habit)
                booked = max(15, 15 * round(template * math.exp(rng.normal(0.0, 0.05)) / 15))
                if booked_total > 0 and booked_total + booked > LIST_MINUTES + 30:
                    break
                booked_total += booked
                mu = (
                    math.log(p.mean_minutes) - 0.5 * p.log_sd**2
                    + s.effect + s.interaction[p.code]
                    + ASA_EFFECT[asa - 1] + AGE_EFFECT_PER_YEAR * max(0.0, age - 60.0)
                )
                actual = max(10, round(math.exp(mu + rng.normal(0.0, p.log_sd))))
                inpatient = rng.random() < p.inpatient
                rows.append((d, proc_index[p.code], int(s.code[1:]) - 1, age, asa, booked, actual, inpatient))
                if booked_total >= LIST_MINUTES - 20:
                    break
    arr = np.array(rows, dtype=float)
    return {
        "day": arr[:, 0].astype(int),
        "procedure": arr[:, 1].astype(int),
        "surgeon": arr[:, 2].astype(int),
        "age": arr[:, 3],
        "asa": arr[:, 4].astype(int),
        "booked": arr[:, 5],
        "actual": arr[:, 6],
        "inpatient": arr[:, 7].astype(bool),
    }


# --------------------------------------------------------------------------------------
# Beds
# --------------------------------------------------------------------------------------


def _lognormal(rng, mean, log_sd, size=None):
    return rng.lognormal(math.log(mean) - 0.5 * log_sd**2, log_sd, size)


def _discharge_hour(rng, admit_hour: int, los_days: float, icu: bool) -> int:
    """Hour of discharge: the day the stay ends, at a time drawn from the daily shape."""
    weights = ICU_DISCHARGE_HOUR_WEIGHTS if icu else DISCHARGE_HOUR_WEIGHTS
    day = int((admit_hour + los_days * 24.0) // 24)
    while True:
        wd = (START.weekday() + day) % 7
        slip = WEEKEND_SLIP.get(wd, 0.0)
        if slip and rng.random() < slip:
            day += 1
            continue
        break
    hour = day * 24 + int(rng.choice(24, p=weights))
    if hour < admit_hour + 3:  # at least a few hours in the bed
        hour = admit_hour + 3 + int(rng.integers(0, 4))
    return hour


def _flag_hour(rng, admit_hour: int, discharge_hour: int) -> int:
    """When the bed is flagged as an expected discharge: 18:00 the evening before the
    estimated discharge day. Estimates are right about two times in three; a late estimate
    means an unflagged discharge, an early one a flag that stays up for an extra day."""
    err = int(rng.choice([-1, 0, 1, 2], p=[0.12, 0.68, 0.15, 0.05]))
    est_day = discharge_hour // 24 + err
    return max(admit_hour + 1, (est_day - 1) * 24 + 18)


def simulate_beds(seed_seq: np.random.SeedSequence, units: list[Unit], cases: dict) -> dict:
    """Patient-level simulation of every unit, hour by hour, with capacity limits."""
    n_units = len(units)
    unit_rngs = [np.random.default_rng(s) for s in seed_seq.spawn(n_units + 1)]
    demand_rng = unit_rngs.pop()  # hospital-wide day-to-day variation
    n_days = N_HOURS // 24

    # Hospital-wide emergency pressure: season x slowly varying noise (AR(1) on the log scale).
    noise = np.zeros(n_days)
    for d in range(1, n_days):
        noise[d] = 0.85 * noise[d - 1] + demand_rng.normal(0.0, 0.03)
    day_factor = seasonal_factor(np.arange(n_days)) * np.exp(noise)
    weekdays = (START.weekday() + np.arange(n_days)) % 7
    day_factor = day_factor * EMERGENCY_WEEKDAY[weekdays]

    # Elective bookings from the operating lists: inpatient cases get a bed on their unit type.
    by_type: dict[str, list[int]] = {}
    for i, u in enumerate(units):
        by_type.setdefault(u.type.code, []).append(i)
    bookings: list[list[tuple[int, float]]] = [[] for _ in range(n_units)]
    book_rng = np.random.default_rng(seed_seq.spawn(1)[0])
    for k in np.flatnonzero(cases["inpatient"]):
        p = PROCEDURES[cases["procedure"][k]]
        utype = p.unit
        if utype == "PAED" and cases["age"][k] >= 16:
            utype = "SURG"
        choices = by_type[utype]
        u = choices[int(book_rng.integers(len(choices)))]
        day = int(cases["day"][k])
        if p.los_mean_days >= 4.0 and book_rng.random() < 0.4:
            hour = (day - 1) * 24 + int(book_rng.integers(15, 20))  # admitted the evening before
        else:
            hour = day * 24 + int(book_rng.integers(6, 9))
        los = _lognormal(book_rng, p.los_mean_days * (1.3 if cases["asa"][k] >= 3 else 1.0), 0.5)
        if hour >= 0:
            bookings[u].append((hour, float(los)))
    for b in bookings:
        b.sort()

    census = np.zeros((n_units, N_HOURS + 1), dtype=np.int32)
    admits = np.zeros((n_units, N_HOURS), dtype=np.int32)
    discharges = np.zeros((n_units, N_HOURS), dtype=np.int32)
    flagged = np.zeros((n_units, N_HOURS + 1), dtype=np.int32)
    booked_next24 = np.zeros((n_units, N_HOURS + 1), dtype=np.int32)
    boarders = np.zeros((n_units, N_HOURS + 1), dtype=np.int32)
    diverted = np.zeros(n_units, dtype=np.int64)
    cancelled = np.zeros(n_units, dtype=np.int64)
    emergency_total = np.zeros(n_units, dtype=np.int64)

    for ui, unit in enumerate(units):
        rng = unit_rngs[ui]
        ut = unit.type
        # emergency demand fills the bed-days the unit's electives leave to its target occupancy
        elective_bed_days = sum(los for _, los in bookings[ui]) / n_days
        needed = ut.target_occupancy * unit.beds - elective_bed_days
        emergency_per_day = max(0.1 * unit.beds, needed) / (ut.los_mean_days + 0.2)
        hour_weights = EMERGENCY_HOUR_WEIGHTS if not ut.icu else 0.6 * EMERGENCY_HOUR_WEIGHTS + 0.4 / 24
        lam = emergency_per_day * np.repeat(day_factor, 24) * np.tile(hour_weights, n_days)
        arrivals = rng.poisson(lam)

        free = unit.beds
        cleaning: list[int] = []  # hours at which a cleaned bed becomes free
        occupants: list[tuple[int, int]] = []  # (discharge hour, flag hour)
        queue: deque[int] = deque()  # boarders' arrival hours
        lounge: deque[tuple[int, float]] = deque()  # electives waiting for a bed
        bk = bookings[ui]
        bi = 0
        admit_h, dis_h, flag_h = [], [], []

        def admit(t, los_days):
            d = _discharge_hour(rng, t, los_days, ut.icu)
            f = _flag_hour(rng, t, d)
            heapq.heappush(occupants, (d, f))
            admit_h.append(t)
            dis_h.append(d)
            flag_h.append(f)

        for t in range(N_HOURS):
            while cleaning and cleaning[0] <= t:
                heapq.heappop(cleaning)
                free += 1
            boarders[ui, t] = len(queue)
            # electives have priority (their bed was reserved); one who arrives before a bed
            # is free waits in the admission lounge, and is cancelled after 10 hours
            while bi < len(bk) and bk[bi][0] <= t:
                lounge.append(bk[bi])
                bi += 1
            while lounge and free > 0:
                free -= 1
                admit(t, lounge.popleft()[1])
            while lounge and t - lounge[0][0] >= 10:
                lounge.popleft()
                cancelled[ui] += 1
            # emergency patients boarding in the emergency department, first come first served
            while queue and free > 0:
                queue.popleft()
                free -= 1
                admit(t, float(_lognormal(rng, ut.los_mean_days, ut.los_log_sd)))
            while queue and t - queue[0] > 24:  # transferred elsewhere after a day waiting
                queue.popleft()
                diverted[ui] += 1
            for _ in range(arrivals[t]):
                emergency_total[ui] += 1
                if free > 0 and not queue:
                    free -= 1
                    admit(t, float(_lognormal(rng, ut.los_mean_days, ut.los_log_sd)))
                else:
                    queue.append(t)
            # discharges during hour t free a bed after cleaning
            while occupants and occupants[0][0] <= t:
                heapq.heappop(occupants)
                turnaround = max(1, math.ceil(float(_lognormal(rng, 1.8, 0.5))))
                heapq.heappush(cleaning, t + 1 + turnaround)
        boarders[ui, N_HOURS] = len(queue)

        a = np.array(admit_h)
        d = np.array(dis_h)
        f = np.array(flag_h)
        np.add.at(admits[ui], a, 1)
        inside = d < N_HOURS
        np.add.at(discharges[ui], d[inside], 1)
        delta = np.zeros(N_HOURS + 2, dtype=np.int64)
        np.add.at(delta, a + 1, 1)
        np.add.at(delta, np.minimum(d + 1, N_HOURS + 1), -1)
        census[ui] = np.cumsum(delta)[: N_HOURS + 1]
        fstart = np.maximum(a + 1, f + 1)
        keep = (fstart <= d) & (fstart <= N_HOURS)
        delta = np.zeros(N_HOURS + 2, dtype=np.int64)
        np.add.at(delta, fstart[keep], 1)
        np.add.at(delta, np.minimum(d[keep] + 1, N_HOURS + 1), -1)
        flagged[ui] = np.cumsum(delta)[: N_HOURS + 1]
        # beds reserved at boundary t: elective bookings for hours t .. t+23
        bh = np.array([h for h, _ in bk], dtype=np.int64)
        cum = np.zeros(N_HOURS + 25, dtype=np.int64)
        np.add.at(cum, np.clip(bh, 0, N_HOURS + 24) + 1, 1)
        cum = np.cumsum(cum)
        tt = np.arange(N_HOURS + 1)
        booked_next24[ui] = cum[tt + 24] - cum[tt]

    return {
        "census": census,
        "admits": admits,
        "discharges": discharges,
        "flagged": flagged,
        "booked_next24": booked_next24,
        "boarders": boarders,
        "diverted": diverted,
        "cancelled": cancelled,
        "emergency_total": emergency_total,
    }


def simulate(seed: int) -> dict:
    """The whole hospital for one seed: units, bed series and operating-room cases."""
    ss = np.random.SeedSequence(seed)
    case_ss, bed_ss, surgeon_ss = ss.spawn(3)
    surgeons = make_surgeons(np.random.default_rng(surgeon_ss))
    cases = simulate_cases(np.random.default_rng(case_ss), surgeons)
    units = make_units()
    beds = simulate_beds(bed_ss, units, cases)
    return {"units": units, "surgeons": surgeons, "cases": cases, "beds": beds}


def unit_features(beds: dict, units: list[Unit], hours: np.ndarray) -> np.ndarray:
    """The bed-demand model's 10 features for every unit at each boundary in `hours`.

    Rows are ordered unit-major: all hours of unit 0, then unit 1, ...
    """
    cap = np.array([u.beds for u in units], dtype=np.float64)
    adm_cum = np.concatenate([np.zeros((len(units), 1)), np.cumsum(beds["admits"], axis=1)], axis=1)
    dis_cum = np.concatenate([np.zeros((len(units), 1)), np.cumsum(beds["discharges"], axis=1)], axis=1)
    lo = np.maximum(hours - 24, 0)
    hod = hour_of_day(hours)
    wd = weekday_of_hour(hours)
    rows = []
    for ui in range(len(units)):
        f = np.empty((len(hours), 10))
        f[:, 0] = beds["census"][ui, hours]
        f[:, 1] = cap[ui]
        f[:, 2] = adm_cum[ui, hours] - adm_cum[ui, lo]
        f[:, 3] = dis_cum[ui, hours] - dis_cum[ui, lo]
        f[:, 4] = beds["booked_next24"][ui, hours] + beds["boarders"][ui, hours]
        f[:, 5] = beds["flagged"][ui, hours]
        f[:, 6] = np.sin(2 * np.pi * hod / 24)
        f[:, 7] = np.cos(2 * np.pi * hod / 24)
        f[:, 8] = np.sin(2 * np.pi * wd / 7)
        f[:, 9] = np.cos(2 * np.pi * wd / 7)
        rows.append(f)
    return np.concatenate(rows, axis=0)
