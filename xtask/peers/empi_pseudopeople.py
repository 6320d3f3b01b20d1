"""Two-source EMPI evaluation sets from pseudopeople, and Splink as the peer.

Run by `cargo xtask empi-eval --dataset pseudopeople` inside a throwaway
virtual environment (pseudopeople, splink, duckdb from PyPI). For one seed and
one source pair it writes, under OUT:

- records.csv: every record of both sources in one layout
  (source, local_id, person, given, family, dob, sex, address_line, unit,
  city, state, postcode, national_id), one record per simulant per source
  (each source is a register that holds a person once, as a hospital's MRN
  register does); `person` is the simulant id, the truth, never shown to the
  engine.
- splink.csv: (source, local_id, cluster) from Splink with the DuckDB
  backend: link-only between the two sources, blocking on names, date of
  birth and postcode (plus street), the prior at one match per record, u by
  random sampling, m by EM (sessions blocked on names, birth date and
  street), pairs clustered at a match probability of 0.5.
- splink.json: Splink's timing and settings summary.

Prints nothing but progress counts: no record is ever printed.
"""

import argparse
import json
import os
import sys
import time

import pandas as pd
import pseudopeople as psp

COLUMNS = [
    "source",
    "local_id",
    "person",
    "given",
    "family",
    "dob",
    "sex",
    "address_line",
    "unit",
    "city",
    "state",
    "postcode",
    "national_id",
]


def text(series):
    return series.astype(object).where(series.notna(), "").astype(str).str.strip()


def iso_date(series):
    """MM/DD/YYYY (the surveys) and YYYYMMDD (social security) as
    YYYY-MM-DD, digits kept as written even where the date is impossible (a
    day-month swap, a typo): a user converting to the API's ISO form would
    do the same. Anything else is left as it is."""
    s = text(series)
    us = s.str.extract(r"^(\d{2})/(\d{2})/(\d{4})$")
    compact = s.str.extract(r"^(\d{4})(\d{2})(\d{2})$")
    out = s.copy()
    hit = us[0].notna()
    out[hit] = us[2][hit] + "-" + us[0][hit] + "-" + us[1][hit]
    hit = compact[0].notna()
    out[hit] = compact[0][hit] + "-" + compact[1][hit] + "-" + compact[2][hit]
    return out


def census_like(df, source):
    """Census, ACS, CPS and WIC share one layout (address, DOB, sex)."""
    out = pd.DataFrame()
    out["person"] = df["simulant_id"]
    out["given"] = text(df["first_name"])
    out["family"] = text(df["last_name"])
    out["dob"] = iso_date(df["date_of_birth"])
    out["sex"] = text(df["sex"])
    out["address_line"] = (text(df["street_number"]) + " " + text(df["street_name"])).str.strip()
    out["unit"] = text(df["unit_number"])
    out["city"] = text(df["city"])
    out["state"] = text(df["state"])
    out["postcode"] = text(df["zipcode"])
    out["national_id"] = ""
    out["source"] = source
    return out


def social_security(df, source):
    """Name, DOB, sex and SSN; no address."""
    df = df.sort_values("event_type")  # 'creation' before 'death'
    out = pd.DataFrame()
    out["person"] = df["simulant_id"]
    out["given"] = text(df["first_name"])
    out["family"] = text(df["last_name"])
    out["dob"] = iso_date(df["date_of_birth"])
    out["sex"] = text(df["sex"])
    for c in ["address_line", "unit", "city", "state", "postcode"]:
        out[c] = ""
    out["national_id"] = text(df["ssn"])
    out["source"] = source
    return out


def taxes(df, source):
    """W2/1099 and 1040: name, SSN and mailing address; no DOB or sex."""
    out = pd.DataFrame()
    out["person"] = df["simulant_id"]
    out["given"] = text(df["first_name"])
    out["family"] = text(df["last_name"])
    out["dob"] = ""
    out["sex"] = ""
    out["address_line"] = (
        text(df["mailing_address_street_number"]) + " " + text(df["mailing_address_street_name"])
    ).str.strip()
    out["unit"] = text(df["mailing_address_unit_number"])
    out["city"] = text(df["mailing_address_city"])
    out["state"] = text(df["mailing_address_state"])
    out["postcode"] = text(df["mailing_address_zipcode"])
    out["national_id"] = text(df["ssn"])
    out["source"] = source
    return out


SOURCES = {
    "census": (psp.generate_decennial_census, census_like),
    "acs": (psp.generate_american_community_survey, census_like),
    "cps": (psp.generate_current_population_survey, census_like),
    "wic": (psp.generate_women_infants_and_children, census_like),
    "ssa": (psp.generate_social_security, social_security),
    "w2": (psp.generate_taxes_w2_and_1099, taxes),
    "tax1040": (psp.generate_taxes_1040, taxes),
}


def load(name, seed):
    generate, shape = SOURCES[name]
    df = shape(generate(seed=seed), name)
    # One record per simulant per source, in the generator's order.
    df = df.drop_duplicates("person", keep="first").reset_index(drop=True)
    df["local_id"] = [f"{name}-{i}" for i in range(len(df))]
    return df[COLUMNS]


def splink_clusters(a, b, out_dir):
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    def prep(df):
        df = df.copy()
        df["unique_id"] = df["local_id"]
        df["street_number"] = df["address_line"].str.split(" ", n=1).str[0].fillna("")
        df["street"] = df["address_line"].str.split(" ", n=1).str[1].fillna("")
        # The sample population's postcode is 00000 everywhere: no postcode,
        # as the engine's standardisation reads it.
        df.loc[df["postcode"].str.fullmatch(r"0*"), "postcode"] = ""
        for c in COLUMNS + ["street_number", "street"]:
            df[c] = df[c].astype(object).where(df[c] != "", None)
        # Valid ISO dates for the date comparison; impossible ones become
        # null, as Splink needs.
        df["dob_iso"] = pd.to_datetime(df["dob"], format="%Y-%m-%d", errors="coerce").dt.strftime(
            "%Y-%m-%d"
        )
        return df.drop(columns=["person"])

    db = DuckDBAPI()
    left = db.register(prep(a), dataset_display_name=a["source"].iloc[0])
    right = db.register(prep(b), dataset_display_name=b["source"].iloc[0])
    settings = SettingsCreator(
        link_type="link_only",
        blocking_rules_to_generate_predictions=[
            block_on("given", "family"),
            block_on("dob_iso"),
            block_on("family", "postcode"),
            block_on("street_number", "street"),
        ],
        comparisons=[
            cl.NameComparison("given"),
            cl.NameComparison("family"),
            cl.DateOfBirthComparison("dob_iso", input_is_string=True),
            cl.ExactMatch("sex"),
            # One comparison for the address line: house number and street
            # are one fact, and two comparisons would count it twice.
            cl.LevenshteinAtThresholds("address_line", 2),
            cl.PostcodeComparison("postcode"),
            cl.LevenshteinAtThresholds("national_id", 1),
        ],
        retain_intermediate_calculation_columns=False,
        # Link-only between two registers that each hold a person once: a
        # record has at most one match on the other side, so the share of
        # matches among all pairs is about one over the larger side. (The
        # estimate from deterministic rules needs fields both sources fill,
        # which some pairs lack.)
        probability_two_random_records_match=1.0 / max(len(a), len(b)),
    )
    started = time.time()
    linker = Linker([left, right], settings, log_level=30)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6)
    for rule in [block_on("given", "family"), block_on("dob_iso")]:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        except Exception as e:  # a rule with no usable pairs (a source lacks the field)
            print(f"splink: EM on a rule skipped: {type(e).__name__}", file=sys.stderr)
    pairs = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs, 0.5)
    got = clusters.as_pandas_dataframe()
    took = time.time() - started
    id_col = "unique_id" if "unique_id" in got.columns else got.columns[0]
    by_id = dict(zip(got[id_col], got["cluster_id"]))
    rows = pd.concat([a, b])[["source", "local_id"]].copy()
    rows["cluster"] = [by_id.get(k, f"solo-{k}") for k in rows["local_id"]]
    rows.to_csv(os.path.join(out_dir, "splink.csv"), index=False)
    with open(os.path.join(out_dir, "splink.json"), "w") as f:
        json.dump({"seconds": round(took, 2), "version": __import__("splink").__version__}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--pair", required=True, help="two sources joined by '-', e.g. census-ssa")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    names = args.pair.split("-")
    if len(names) != 2 or any(n not in SOURCES for n in names):
        sys.exit(f"--pair: two of {sorted(SOURCES)} joined by '-'")
    os.makedirs(args.out, exist_ok=True)
    a, b = (load(n, args.seed) for n in names)
    pd.concat([a, b]).to_csv(os.path.join(args.out, "records.csv"), index=False)
    print(f"pseudopeople {args.pair} seed {args.seed}: {len(a)} + {len(b)} records", file=sys.stderr)
    splink_clusters(a, b, args.out)


if __name__ == "__main__":
    main()
