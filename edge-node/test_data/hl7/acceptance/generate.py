"""Writes the acceptance corpus of edge-node (tests/it/acceptance.rs).

Run from this folder: python3 generate.py. The files are committed; this script
documents how they were made and writes them byte-exactly.

Three feeds, each shaped like the ADT feed of a different kind of sending
system. Every message was written by hand after the *shape* of publicly
documented sample messages (segment order, field usage, identifier styles);
no vendor sample text is copied and every person, number and address is
invented (phone numbers 555-01xx, e-mail at example.org, "SSNs" in the 999
range that is never issued).

The test appliance (tests/it/support.rs, `TestApp::start(&[("3W", 4, 2),
("ICU", 2, 1)])`) maps its beds to these HL7 locations (PL: point of
care^room^bed^facility), facility TH:

    3W-000 = 3W^0^0^TH    3W-001 = 3W^0^1^TH    3W-002 = 3W^1^2^TH
    3W-003 = 3W^1^3^TH    ICU-000 = ICU^0^0^TH  ICU-001 = ICU^1^1^TH

3W and ICU at TH are the managed points of care; everything else (ED, ER,
clinics, unit 4E, 5N, other facilities such as THNC, THOP or the North
campus THN, even 3W^0^0^THN) is off the board. A location inside 3W or ICU
at TH that is not one of these beds (3W^1^OF^TH, an overflow bed) is
"unknown": a configuration problem, parked.

Every file runs on a fresh appliance whose six beds start vacant and clean,
and the appliance admits only into a clean bed: a bed a patient left is
dirty until a bed status (A20 U) says it is clean, so each scenario below
keeps its own tally of the six beds in the comments.
"""

import hashlib

W0, W1, W2, W3 = "3W^0^0^TH", "3W^0^1^TH", "3W^1^2^TH", "3W^1^3^TH"
I0, I1 = "ICU^0^0^TH", "ICU^1^1^TH"


def seg(name, fields):
    """A segment from {field number: value}; trailing empty fields dropped."""
    n = max((i for i, v in fields.items() if v), default=0)
    return "|".join([name] + [fields.get(i, "") for i in range(1, n + 1)])


def msh(fields):
    """MSH from {field number (3..): value}: MSH-1 '|' and MSH-2 '^~\\&'."""
    n = max(fields)
    return "MSH|^~\\&|" + "|".join(fields.get(i, "") for i in range(3, n + 1))


def content_key(msg):
    """What the appliance compares to tell a resend (dedup.rs): the bytes
    with MSH-7 blanked and line endings read as CR."""
    segs = [s for s in msg.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    f = segs[0].split("|")
    keys = (f[2], f[3], f[9])  # MSH-3, MSH-4, MSH-10
    f[6] = ""
    segs[0] = "|".join(f)
    return keys, hashlib.sha256("\r".join(segs).encode("latin-1")).hexdigest()


def check(name, msgs, resends):
    """Each message is new content under its sender keys, except the
    deliberate resends (index → index of the original, 0-based)."""
    seen = {}
    for i, m in enumerate(msgs):
        k = content_key(m)
        if i in resends:
            assert seen.get(k) == resends[i], f"{name}: message {i + 1} is not a resend of {resends[i] + 1}"
            continue
        assert k not in seen, f"{name}: message {i + 1} repeats message {seen[k] + 1}"
        seen[k] = i


def write(name, msgs, sep, encoding):
    """Segments end with `sep` (the file's one line ending), written in `encoding`."""
    data = "".join(sep.join(m.split("\r")) for m in msgs)
    with open(name, "wb") as f:
        f.write(data.encode(encoding))
    print(f"{name}: {len(msgs)} messages, {len(data.encode(encoding))} bytes")


# ---------------------------------------------------------------------------
# 1. epic_style.hl7 — an Epic-Bridges-like outbound ADT feed.
#
# v2.5.1, MSH-3 EPIC, MSH-7 to the second with the sender's offset (-0500),
# original-mode ACKs, CR segment ends. PID-3 repeats the MRN (EPI^MR) with an
# SSA^SS number and the EPIC^EPI enterprise id; PV1-19 is the CSN (contact
# serial number); PV1-44 the admit time; EVN-2 (recorded) and EVN-6
# (occurred) both valued with EVN-5 the operator; PD1/NK1/PV2/OBX/AL1/DG1/
# GT1/IN1 around PID/PV1; ZPV and ZBE Z-segments; escapes in an address
# (\T\) and in a name (\T\) and an observation (\S\).
# ---------------------------------------------------------------------------

EPIC_PATIENTS = {
    "quill": dict(mrn="E1000101", ssn="999-01-0101", epi="Z4410101", name="QUILL^HARRIET^MAE^^^^L",
                  dob="19580412", sex="F", addr="44 LARCH RD^APT 2^SPRINGFIELD^IL^62704^USA^P^^SANGAMON",
                  phone="^PRN^PH^^1^217^5550141~^NET^Internet^hquill@example.org"),
    "okonjo": dict(mrn="E1000102", ssn="999-01-0102", epi="Z4410102", name="OKONJO^MARCUS^TOBI^^^^L",
                   dob="19660930", sex="M", addr="908 CEDAR CT^^CHATHAM^IL^62629^USA^P",
                   phone="^PRN^PH^^1^217^5550142"),
    "stclair": dict(mrn="E1000103", ssn="999-01-0103", epi="Z4410103", name="ST\\T\\CLAIR^ROSALIND^^^^^L",
                    dob="19790214", sex="F", addr="ORCHARD \\T\\ VINE APTS^UNIT 4B^SPRINGFIELD^IL^62702^USA^P",
                    phone="^PRN^PH^^1^217^5550143"),
    "lindgren": dict(mrn="E1000104", ssn="999-01-0104", epi="Z4410104", name="LINDGREN^OSKAR^^^^^L",
                     dob="19450707", sex="M", addr="3 PRAIRIE WAY^^PETERSBURG^IL^62675^USA^P",
                     phone="^PRN^PH^^1^217^5550144"),
    "haddad": dict(mrn="E1000105", ssn="999-01-0105", epi="Z4410105", name="HADDAD^LAYLA^N^^^^L",
                   dob="19900321", sex="F", addr="17 WILLOW BEND^^ROCHESTER^IL^62563^USA^P",
                   phone="^PRN^PH^^1^217^5550145"),
    "pruitt": dict(mrn="E1000106", ssn="999-01-0106", epi="Z4410106", name="PRUITT^DALE^^^^^L",
                   dob="19830105", sex="M", addr="220 N 5TH ST^^SPRINGFIELD^IL^62701^USA^P",
                   phone="^PRN^PH^^1^217^5550146"),
    # An unidentified trauma patient, later merged (A40) into the real record.
    "trauma": dict(mrn="E9000001", ssn="", epi="Z4499001", name="ZZTRAUMA^ALPHA^^^^^L",
                   dob="19000101", sex="M", addr="", phone=""),
    "ferreira": dict(mrn="E1000107", ssn="999-01-0107", epi="Z4410107", name="FERREIRA^TOMAS^^^^^L",
                     dob="19920611", sex="M", addr="55 KICKAPOO DR^^SHERMAN^IL^62684^USA^P",
                     phone="^PRN^PH^^1^217^5550147"),
    "bergstrom": dict(mrn="E1000108", ssn="999-01-0108", epi="Z4410108", name="BERGSTROM^INGRID^^^^^L",
                      dob="19700830", sex="F", addr="6 HARBOR LN^^DECATUR^IL^62521^USA^P",
                      phone="^PRN^PH^^1^217^5550148"),
    "achebe": dict(mrn="E1000109", ssn="999-01-0109", epi="Z4410109", name="ACHEBE^CHIDI^^^^^L",
                   dob="19550119", sex="M", addr="71 OAK RIDGE^^JACKSONVILLE^IL^62650^USA^P",
                   phone="^PRN^PH^^1^217^5550149"),
}

EPIC_ED = "ED^ED12^01^TH^^^^^EMERGENCY DEPT"
EPIC_4E = "4E^410^A^TH^^^^^4 EAST"  # a unit the appliance does not manage
EPIC_CLINIC = "FMC^EXAM3^^THNC^^^^^FAMILY MED CLINIC"  # another site
EPIC_NORTH_3W = "3W^0^0^THN^^^^^3 WEST NORTH"  # same unit name, other campus
ATTENDING = "1730281934^WELBY^MARCUS^J^^^MD^^NPI^^^^NPI"
HOSPITALIST = "1548397162^ABERNATHY^JOAN^^^^MD^^NPI^^^^NPI"


def epic_time(day, hhmmss):
    return f"202612{day:02d}{hhmmss}-0500"


def epic_pid(p):
    ids = [f"{p['mrn']}^^^EPI^MR"]
    if p["ssn"]:
        ids.append(f"{p['ssn']}^^^SSA^SS")
    ids.append(f"{p['epi']}^^^EPIC^EPI")
    return seg("PID", {1: "1", 3: "~".join(ids), 5: p["name"], 7: p["dob"], 8: p["sex"],
                       11: p["addr"], 13: p["phone"], 15: "ENG^ENGLISH^HL70296", 16: "M" if p["ssn"] else "",
                       18: "" if not p["ssn"] else f"9{p['mrn'][1:]}", 19: p["ssn"].replace("-", "")})


def epic_pv1(cls, loc, csn, admitted, prior="", pending="", service="MED", discharged="", disposition=""):
    return seg("PV1", {1: "1", 2: cls, 3: loc, 4: {"I": "R", "E": "E"}.get(cls, ""),
                       6: prior, 7: ATTENDING, 10: service, 14: "1" if cls != "E" else "7",
                       17: HOSPITALIST if cls == "I" else "", 18: cls, 19: csn, 20: "COM",
                       36: disposition, 39: "TH", 42: pending, 44: admitted, 45: discharged})


EPIC_CTL = [3100400]


def epic(trig, struct, day, hhmm, body, occurred=None, operator="E41822^KLEIN^DORA^^^^^^EPIC^^^^EPIC"):
    """One Epic message: MSH, EVN (EVN-2 recorded, EVN-6 occurred), then body."""
    EPIC_CTL[0] += 17
    sent = epic_time(day, hhmm + "07")
    recorded = epic_time(day, hhmm + "00")
    occurred = occurred or epic_time(day, hhmm[:2] + f"{max(int(hhmm[2:]) - 4, 0):02d}" + "00")
    head = msh({3: "EPIC", 4: "TH", 5: "HMS", 6: "EDGE", 7: sent, 9: f"ADT^{trig}^{struct}",
                10: str(EPIC_CTL[0]), 11: "P", 12: "2.5.1"})
    evn = seg("EVN", {1: trig, 2: recorded, 4: "ADT_EVENT", 5: operator, 6: occurred})
    return "\r".join([head, evn] + body) + "\r"


RELATIONSHIP = {"SPO": "SPOUSE", "BRO": "BROTHER"}


def nk1(name, rel, phone):
    return seg("NK1", {1: "1", 2: name, 3: f"{rel}^{RELATIONSHIP[rel]}^HL70063", 5: phone, 7: "EC^EMERGENCY CONTACT^HL70131"})


def zpv(csn, unit):
    return seg("ZPV", {1: csn, 2: unit, 4: "ADT^ADMISSION"})


def zbe(movement, at, action):
    return seg("ZBE", {1: f"{movement}^EPIC", 2: at, 4: action})


def epic_feed():
    P = EPIC_PATIENTS
    q, o, s, lg, h, pr, tr, fe, bg, ac = (P[k] for k in ["quill", "okonjo", "stclair", "lindgren", "haddad",
                                                          "pruitt", "trauma", "ferreira", "bergstrom", "achebe"])
    csn = {"q": "700100011", "o": "700100012", "s": "700100013", "lg": "700100014", "h": "700100015",
           "pr": "700100016", "tr": "700100017", "bg": "700100018", "ac": "699900001"}
    adm = {"q": epic_time(1, "071200"), "o": epic_time(1, "093000"), "s": epic_time(1, "101500"),
           "h": epic_time(2, "084000"), "tr": epic_time(3, "021500"), "bg": epic_time(1, "080500"),
           "ac": "20261128160000-0500"}
    vitals = [
        seg("OBX", {1: "1", 2: "NM", 3: "8302-2^HEIGHT^LN", 5: "165", 6: "cm", 11: "F"}),
        seg("OBX", {1: "2", 2: "NM", 3: "29463-7^WEIGHT^LN", 5: "71.2", 6: "kg", 11: "F"}),
        seg("OBX", {1: "3", 2: "ST", 3: "85354-9^BLOOD PRESSURE^LN", 5: "142\\S\\88", 6: "mm[Hg]", 11: "F"}),
    ]
    msgs = []
    # --- Day 1 -------------------------------------------------------------
    # 1. A04: Quill registered in the emergency department (off the board).
    msgs.append(epic("A04", "ADT_A01", 1, "0712", [
        epic_pid(q), seg("PD1", {4: "1336195708^NGUYEN^PAULA^^^^MD^^NPI"}),
        nk1("QUILL^GORDON", "SPO", "^PRN^PH^^1^217^5550151"),
        epic_pv1("E", EPIC_ED, csn["q"], adm["q"], service="EM"),
        seg("PV2", {3: "^CHEST PAIN"}), zpv(csn["q"], "ED")]))
    # 2. A08: ED triage update with vitals and an allergy (off the board).
    msgs.append(epic("A08", "ADT_A01", 1, "0731", [
        epic_pid(q), epic_pv1("E", EPIC_ED, csn["q"], adm["q"], service="EM"),
        seg("PV2", {3: "^CHEST PAIN, RADIATING"}), *vitals,
        seg("AL1", {1: "1", 2: "DA^DRUG ALLERGY^HL70127", 3: "70618^PENICILLIN^RXNORM", 4: "MO^MODERATE^HL70128",
                    5: "HIVES"}),
        zpv(csn["q"], "ED")]))
    # 3. A04: Bergstrom at the family medicine clinic of another site (THNC).
    msgs.append(epic("A04", "ADT_A01", 1, "0805", [
        epic_pid(bg), epic_pv1("O", EPIC_CLINIC, csn["bg"], adm["bg"], service="FM"),
        zpv(csn["bg"], "FMC")]))
    # 4. A01: Okonjo admitted directly to ICU^0^0 (ICU-000). Beds: I0 Okonjo.
    msgs.append(epic("A01", "ADT_A01", 1, "0930", [
        epic_pid(o), nk1("OKONJO^ADA", "SPO", "^PRN^PH^^1^217^5550152"),
        epic_pv1("I", I0 + "^^^^^ICU", csn["o"], adm["o"], service="CCM"),
        seg("PV2", {3: "^SEPSIS", 8: "20261204"}),
        seg("DG1", {1: "1", 3: "A41.9^SEPSIS, UNSPECIFIED ORGANISM^I10", 6: "A"}),
        seg("GT1", {1: "1", 3: "OKONJO^MARCUS^TOBI", 5: "908 CEDAR CT^^CHATHAM^IL^62629", 11: "SEL"}),
        seg("IN1", {1: "1", 2: "BCBS01^BLUE PLAN PPO", 3: "4410", 4: "BLUE PLAN OF ILLINOIS", 17: "SEL",
                    36: "XQJ999010102"}),
        zpv(csn["o"], "ICU"), zbe("88101", epic_time(1, "093000"), "INSERT")]))
    # 5. A01: St&Clair admitted to 3W^0^1 (3W-001). Beds: I0 Okonjo, W1 St&Clair.
    msgs.append(epic("A01", "ADT_A01", 1, "1015", [
        epic_pid(s), nk1("ST\\T\\CLAIR^MILES", "BRO", "^PRN^PH^^1^217^5550153"),
        epic_pv1("I", W1, csn["s"], adm["s"]), seg("PV2", {3: "^COPD EXACERBATION"}),
        seg("DG1", {1: "1", 3: "J44.1^COPD WITH ACUTE EXACERBATION^I10", 6: "A"}),
        seg("IN1", {1: "1", 2: "MCR^MEDICARE", 3: "0001", 4: "MEDICARE PART A", 17: "SEL", 36: "9ZZ9ZZ9ZZ03"}),
        zpv(csn["s"], "3W"), zbe("88102", adm["s"], "INSERT")]))
    # 6. A06: Quill becomes an inpatient while still in the ED: nothing on the board.
    msgs.append(epic("A06", "ADT_A06", 1, "1102", [
        epic_pid(q), epic_pv1("I", EPIC_ED, csn["q"], adm["q"]), zpv(csn["q"], "ED")]))
    # 7. A02: Quill from the ED to 3W^0^0 (3W-000): an admission to the board.
    #    Beds: W0 Quill, W1 St&Clair, I0 Okonjo.
    msgs.append(epic("A02", "ADT_A02", 1, "1240", [
        epic_pid(q), epic_pv1("I", W0, csn["q"], adm["q"], prior=EPIC_ED),
        zpv(csn["q"], "3W"), zbe("88103", epic_time(1, "124000"), "INSERT")]))
    # 8. A08: St&Clair's new address (escaped '&'); same bed.
    s2 = dict(s, addr="CEDAR \\T\\ ELM CO-OP^ROOM 12^SPRINGFIELD^IL^62703^USA^P")
    msgs.append(epic("A08", "ADT_A01", 1, "1420", [epic_pid(s2), epic_pv1("I", W1, csn["s"], adm["s"])]))
    # 9. A02: Okonjo steps down from ICU to 3W^1^2 (3W-002). I0 dirty.
    msgs.append(epic("A02", "ADT_A02", 1, "1610", [
        epic_pid(o), epic_pv1("I", W2, csn["o"], adm["o"], prior=I0), zbe("88104", epic_time(1, "161000"), "INSERT")]))
    # --- Day 2 -------------------------------------------------------------
    # 10. A16: St&Clair expected to go home.
    a16 = epic("A16", "ADT_A16", 2, "0805", [epic_pid(s2), epic_pv1("I", W1, csn["s"], adm["s"])])
    msgs.append(a16)
    # 11. A25: ...not today after all.
    msgs.append(epic("A25", "ADT_A21", 2, "1130", [epic_pid(s2), epic_pv1("I", W1, csn["s"], adm["s"])]))
    # 12. The A16 (message 10) again: Bridges resent its queue after a link
    #     bounce; same MSH-10 and content, a later MSH-7. A duplicate: the same
    #     ACK, nothing applied (3W-001 must not be pending discharge again).
    msgs.append(a16.replace(epic_time(2, "080507") + "||", epic_time(2, "113412") + "||", 1))
    # 13. A14: Lindgren pending admit, the bed in PV1-42 (PV1-3 not yet given):
    #     3W^1^3 (3W-003) reserved.
    msgs.append(epic("A14", "ADT_A05", 2, "0900", [
        epic_pid(lg), epic_pv1("I", "", csn["lg"], "", pending=W3)]))
    # 14. A27: his pending admit cancelled: 3W-003 clean again.
    msgs.append(epic("A27", "ADT_A21", 2, "0945", [
        epic_pid(lg), epic_pv1("I", "", csn["lg"], "", pending=W3)]))
    # 15. A14: Haddad pending admit to 3W^1^3 (PV1-3 this time): reserved.
    msgs.append(epic("A14", "ADT_A05", 2, "0950", [
        epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"])]))
    # 16. A01: Haddad arrives in the bed held for her. Beds: W0 Quill,
    #     W1 St&Clair, W2 Okonjo, W3 Haddad; I0 dirty, I1 clean.
    msgs.append(epic("A01", "ADT_A01", 2, "1040", [
        epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"], service="SUR"),
        seg("DG1", {1: "1", 3: "K35.80^ACUTE APPENDICITIS^I10", 6: "A"}), zbe("88105", epic_time(2, "104000"), "INSERT")]))
    # 17. A15: Quill pending transfer to ICU^1^1 (ICU-001 held for her).
    msgs.append(epic("A15", "ADT_A15", 2, "1300", [
        epic_pid(q), epic_pv1("I", W0, csn["q"], adm["q"], pending=I1 + "^^^^^ICU")]))
    # 18. A26: the transfer is called off: ICU-001 clean again.
    msgs.append(epic("A26", "ADT_A21", 2, "1335", [
        epic_pid(q), epic_pv1("I", W0, csn["q"], adm["q"], pending=I1 + "^^^^^ICU")]))
    # 19./20. A21/A22: Haddad out on a pass and back: her bed stays held.
    msgs.append(epic("A21", "ADT_A21", 2, "1500", [epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"], service="SUR")]))
    msgs.append(epic("A22", "ADT_A21", 2, "1745", [epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"], service="SUR")]))
    # 21. A17: Quill (3W-000) and Okonjo (3W-002) swap beds; each PV1 names
    #     the bed it goes to. Beds: W0 Okonjo, W2 Quill.
    msgs.append(epic("A17", "ADT_A17", 2, "1900", [
        epic_pid(q), epic_pv1("I", W2, csn["q"], adm["q"], prior=W0),
        epic_pid(o), epic_pv1("I", W0, csn["o"], adm["o"], prior=W2)]))
    # --- Day 3 -------------------------------------------------------------
    # 22. A01: an unidentified trauma patient admitted to ICU^1^1 (ICU-001).
    msgs.append(epic("A01", "ADT_A01", 3, "0215", [
        epic_pid(tr), epic_pv1("I", I1 + "^^^^^ICU", csn["tr"], adm["tr"], service="TRA"),
        zbe("88106", adm["tr"], "INSERT")]))
    # 23. A40: identified: the trauma record merged into Ferreira's.
    msgs.append(epic("A40", "ADT_A39", 3, "0950", [
        epic_pid(fe), seg("MRG", {1: f"{tr['mrn']}^^^EPI^MR", 7: "ZZTRAUMA^ALPHA"}),
        seg("PV1", {1: "1", 2: "I", 3: I1, 19: csn["tr"]})]))
    # 24. A02: Haddad to 4E, a unit off the board: 3W-003 released (dirty).
    msgs.append(epic("A02", "ADT_A02", 3, "1100", [
        epic_pid(h), epic_pv1("I", EPIC_4E, csn["h"], adm["h"], prior=W3, service="SUR")]))
    # 25. A12: that transfer was entered in error: back into 3W-003.
    msgs.append(epic("A12", "ADT_A12", 3, "1122", [
        epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"], prior=EPIC_4E, service="SUR")]))
    # 26. A03: Quill discharged from 3W-002 (dirty).
    msgs.append(epic("A03", "ADT_A03", 3, "1400", [
        epic_pid(q), epic_pv1("I", W2, csn["q"], adm["q"], discharged=epic_time(3, "140000"), disposition="01")]))
    # 27. A13: her discharge cancelled: back into 3W-002 (still vacant).
    msgs.append(epic("A13", "ADT_A01", 3, "1420", [epic_pid(q), epic_pv1("I", W2, csn["q"], adm["q"])]))
    # 28. A03: Bergstrom's clinic visit ends (off the board).
    msgs.append(epic("A03", "ADT_A03", 3, "1530", [
        epic_pid(bg), epic_pv1("O", EPIC_CLINIC, csn["bg"], adm["bg"], service="FM",
                               discharged=epic_time(3, "153000"))]))
    # 29. A54: a new attending for Okonjo: stored, no effect.
    msgs.append(epic("A54", "ADT_A54", 3, "1600", [
        epic_pid(o), epic_pv1("I", W0, csn["o"], adm["o"]).replace(ATTENDING, HOSPITALIST, 1)]))
    # 30. A31: Okonjo's phone updated at the person level.
    o2 = dict(o, phone="^PRN^PH^^1^217^5550162")
    msgs.append(epic("A31", "ADT_A05", 3, "1610", [epic_pid(o2), seg("PV1", {1: "1", 2: "N"})]))
    # 31. A01: Pruitt admitted to 3W at the North campus (THN): same unit
    #     name, another facility: off the board.
    msgs.append(epic("A01", "ADT_A01", 3, "1700", [
        epic_pid(pr), epic_pv1("I", EPIC_NORTH_3W, csn["pr"], epic_time(3, "170000"))]))
    # 32. A03: Achebe, admitted (CSN 699900001) before this interface went
    #     live, is discharged; PV1-3 names ICU^0^0, but the visit holds no bed
    #     on the board. DELIBERATELY PARKABLE: "visit ... holds no bed".
    msgs.append(epic("A03", "ADT_A03", 3, "1815", [
        epic_pid(ac), epic_pv1("I", I0, csn["ac"], adm["ac"],
                               discharged=epic_time(3, "181500"), disposition="01")]))
    # 33. A03: Haddad discharged from 3W-003 (dirty).
    msgs.append(epic("A03", "ADT_A03", 3, "1900", [
        epic_pid(h), epic_pv1("I", W3, csn["h"], adm["h"], service="SUR", discharged=epic_time(3, "190000"),
                              disposition="01")]))
    check("epic_style.hl7", msgs, {11: 9})
    return msgs


# ---------------------------------------------------------------------------
# 2. cerner_style.hl7 — a Cerner/Oracle-Health-like (HNAM) outbound ADT feed.
#
# v2.3, MSH-3 HNAM, MSH-4 a facility code, MSH-9 without the structure,
# MSH-10 "Q…T…", CRLF segment ends (the whole file). PID-2 and PID-3 with
# MRN/CMRN/SSN aliases (type "MRN", not "MR": the first repetition is the
# MRN), PID-18 the FIN; PV1-3 with the facility in PL-4 and building and
# floor in PL-7/PL-8; PV1-19 the FIN; PV1-44 the admit time. EVN without
# EVN-6. A08 storms (several A08 per change), A28/A31 person updates, A04
# clinic registrations; one visit sent with an empty PV1-19 throughout (its
# visit is PID-3 + PV1-44). After message 22 the interface engine restarts
# and its MSH-10 counter starts over: control ids are reused for other
# content, each a new message.
# ---------------------------------------------------------------------------

CERNER_CTL = [0]


def cerner(trig, day, hhmm, body, ctl=None, operator="RSTONE^Stone^Rae^^^^^^^Personnel"):
    if ctl is None:
        CERNER_CTL[0] += 1
        ctl = CERNER_CTL[0]
    t = f"202612{day:02d}{hhmm}"
    head = msh({3: "HNAM", 4: "THMAIN", 5: "HMS", 6: "EDGE", 7: t + "14", 9: f"ADT^{trig}",
                10: f"Q{63800000 + ctl}T{63800000 + ctl + 1}", 11: "P", 12: "2.3"})
    evn = seg("EVN", {1: trig, 2: t + "10", 5: operator})
    return "\r".join([head, evn] + body) + "\r"


def cerner_pid(mrn, name, dob, sex, fin="", addr="", phone="", ssn=""):
    ids = [f"{mrn}^^^TH_MRN^MRN", f"9{mrn[1:]}^^^TH_CMRN^CMRN"]
    if ssn:
        ids.append(f"{ssn}^^^SSN^SSN")
    return seg("PID", {1: "1", 2: f"{mrn}^^^TH_MRN^MRN", 3: "~".join(ids), 5: name + "^^^^Current", 7: dob, 8: sex,
                       11: addr, 13: phone, 18: f"{fin}^^^TH_FIN^FIN NBR" if fin else "",
                       19: ssn.replace("-", "")})


def cerner_loc(unit, room, bed, facility="TH", building="MAIN", floor="3"):
    return f"{unit}^{room}^{bed}^{facility}^^^{building}^{floor}"


CW0, CW1, CW2, CW3 = (cerner_loc("3W", r, b) for r, b in [("0", "0"), ("0", "1"), ("1", "2"), ("1", "3")])
CI0, CI1 = cerner_loc("ICU", "0", "0", floor="2"), cerner_loc("ICU", "1", "1", floor="2")
CED = cerner_loc("ED", "TRIAGE", "", floor="1")
CCARD = cerner_loc("CARDCLN", "EXAM2", "", facility="THOP", building="OPBLDG", floor="1")
CORTHO = cerner_loc("ORTHOCLN", "EXAM5", "", facility="THOP", building="OPBLDG", floor="2")
CATT = "20117^Marsh^Ellen^^^^MD^^^Personnel"
CATT2 = "20244^Ibekwe^Sam^^^^MD^^^Personnel"


def cerner_pv1(cls, loc, fin, admitted, prior="", pending="", service="MED", att=CATT, ptype=None,
               discharged=""):
    return seg("PV1", {1: "1", 2: cls, 3: loc, 4: "Routine", 6: prior, 7: att, 10: service,
                       14: "Home" if cls != "E" else "Walk-in", 18: ptype or {"I": "Inpatient", "O": "Clinic",
                                                                               "E": "Emergency"}.get(cls, cls),
                       19: f"{fin}^^^TH_FIN^FIN NBR" if fin else "", 20: "Commercial", 39: "TH", 41: "Active",
                       42: pending, 44: admitted, 45: discharged})


def cerner_feed():
    astrid = dict(mrn="C200111", name="HALVORSEN^ASTRID^K", dob="19710923", sex="F", ssn="999-11-0111")
    astrid_addr = "812 BIRCH LN^^SPRINGFIELD^IL^62711^USA^Home"
    teo = dict(mrn="C200112", name="MARQUEZ^TEODORO^J", dob="19630304", sex="M", ssn="999-11-0112")
    wren = dict(mrn="C200113", name="ASHBY^WREN", dob="19881117", sex="F")
    ezra = dict(mrn="C200114", name="KOWALCZYK^EZRA", dob="19510228", sex="M")
    priya = dict(mrn="C200115", name="RAGHAVAN^PRIYA^S", dob="19950706", sex="F")
    hugo = dict(mrn="C200116", name="BELLAMY^HUGO", dob="19480512", sex="M")
    nell = dict(mrn="C200117", name="FAIRWEATHER^NELL", dob="20010130", sex="F")
    baby = dict(mrn="C200118", name="RAGHAVAN^BABYGIRL", dob="20261205", sex="F")
    t_adm, w_adm = "202612041930", "202612050715"
    msgs = []
    # 1. A28: Halvorsen added to the person index (no visit).
    msgs.append(cerner("A28", 4, "0810", [cerner_pid(**astrid), seg("PV1", {1: "1", 2: "O"})]))
    # 2. A31: her address and phone added.
    msgs.append(cerner("A31", 4, "0812", [cerner_pid(**astrid, addr=astrid_addr, phone="(217)555-0171^Home"),
                                          seg("PV1", {1: "1", 2: "O"})]))
    # 3. A04: registered at the cardiology clinic (outpatient site THOP).
    msgs.append(cerner("A04", 4, "0830", [cerner_pid(**astrid, fin="F500111", addr=astrid_addr),
                                          cerner_pv1("O", CCARD, "F500111", "202612040830", service="CAR")]))
    # 4.-5. A08 storm on the clinic visit: check-in, then insurance.
    msgs.append(cerner("A08", 4, "0831", [cerner_pid(**astrid, fin="F500111", addr=astrid_addr),
                                          cerner_pv1("O", CCARD, "F500111", "202612040830", service="CAR")]))
    msgs.append(cerner("A08", 4, "0833", [cerner_pid(**astrid, fin="F500111", addr=astrid_addr),
                                          cerner_pv1("O", CCARD, "F500111", "202612040830", service="CAR"),
                                          seg("IN1", {1: "1", 2: "AET01^AETNA CHOICE", 4: "AETNA", 36: "W999110111"})]))
    # 6. A03: clinic checkout (off the board).
    msgs.append(cerner("A03", 4, "0955", [cerner_pid(**astrid, fin="F500111", addr=astrid_addr),
                                          cerner_pv1("O", CCARD, "F500111", "202612040830", service="CAR",
                                                     discharged="202612040955")]))
    # 7. A04: Marquez registered in the ED (facility TH, not a managed unit).
    msgs.append(cerner("A04", 4, "1915", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("E", CED, "F500112", t_adm, service="EME")]))
    # 8. A02: from the ED to 3W^0^0 (3W-000): an admission to the board.
    msgs.append(cerner("A02", 4, "2310", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CW0, "F500112", t_adm, prior=CED)]))
    # 9.-12. A08 storm: attending, allergy, then a bed correction to 3W^0^1
    #     (3W-001: a correction move, 3W-000 dirty), then the diet.
    msgs.append(cerner("A08", 4, "2311", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CW0, "F500112", t_adm, prior=CED, att=CATT2)]))
    msgs.append(cerner("A08", 4, "2312", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CW0, "F500112", t_adm, prior=CED, att=CATT2),
                                          seg("AL1", {1: "1", 2: "Drug", 3: "d00001^Sulfa drugs^Multum", 4: "Severe",
                                                      5: "Rash"})]))
    msgs.append(cerner("A08", 4, "2320", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CW1, "F500112", t_adm, prior=CED, att=CATT2)]))
    msgs.append(cerner("A08", 4, "2321", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CW1, "F500112", t_adm, prior=CED, att=CATT2),
                                          seg("OBX", {1: "1", 2: "ST", 3: "DIET^Diet order", 5: "Cardiac diet",
                                                      11: "F"})]))
    # 13. A01: Ashby admitted to 3W^1^2 (3W-002) with an EMPTY PV1-19: her
    #     visit is PID-3 (first repetition, TH_MRN) with PV1-44.
    msgs.append(cerner("A01", 5, "0715", [cerner_pid(**wren), cerner_pv1("I", CW2, "", w_adm)]))
    # 14.-15. A08s for her, PV1-44 now to the second (the same instant): the
    #     same visit, same bed.
    msgs.append(cerner("A08", 5, "0716", [cerner_pid(**wren), cerner_pv1("I", CW2, "", w_adm + "00")]))
    msgs.append(cerner("A08", 5, "0740", [cerner_pid(**wren, phone="(217)555-0173^Home"),
                                          cerner_pv1("I", CW2, "", w_adm + "00")]))
    # 16. A16: expected to go home (found by PID-3 + PV1-44).
    msgs.append(cerner("A16", 5, "1300", [cerner_pid(**wren), cerner_pv1("I", CW2, "", w_adm)]))
    # 17. A05: Kowalczyk pre-admitted for surgery to 3W^1^3 (3W-003 reserved).
    msgs.append(cerner("A05", 5, "1400", [cerner_pid(**ezra, fin="F500114"),
                                          cerner_pv1("P", CW3, "F500114", "202612060700", service="SUR",
                                                     ptype="Preadmit")]))
    # 18. A38: his surgery postponed: pre-admit cancelled (3W-003 clean).
    msgs.append(cerner("A38", 5, "1610", [cerner_pid(**ezra, fin="F500114"),
                                          cerner_pv1("P", CW3, "F500114", "202612060700", service="SUR",
                                                     ptype="Preadmit")]))
    # 19. A01: Raghavan admitted to 3W^1^3 (3W-003)...
    msgs.append(cerner("A01", 5, "1700", [cerner_pid(**priya, fin="F500115"),
                                          cerner_pv1("I", CW3, "F500115", "202612051700", service="OB")]))
    # 20. A11: ...in error (she was for Labor and Delivery): 3W-003 dirty.
    msgs.append(cerner("A11", 5, "1708", [cerner_pid(**priya, fin="F500115"),
                                          cerner_pv1("I", CW3, "F500115", "202612051700", service="OB")]))
    # 21. A03: Ashby discharged (empty PV1-19 again, PV1-44 to the second: it
    #     must find the visit of message 13, else it would park): 3W-002 dirty.
    msgs.append(cerner("A03", 5, "1730", [cerner_pid(**wren), cerner_pv1("I", CW2, "", w_adm + "00",
                                                                          discharged="202612051730")]))
    # 22. A07: Marquez changed to outpatient (observation): the bed stays held.
    msgs.append(cerner("A07", 5, "1800", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("O", CW1, "F500112", t_adm, att=CATT2, ptype="Observation")]))
    # --- The interface engine restarts: MSH-10 counts from the start again.
    # 23. (control id of message 1) A01: Bellamy admitted to ICU^1^1 (ICU-001).
    msgs.append(cerner("A01", 6, "0200", [cerner_pid(**hugo, fin="F500116"),
                                          cerner_pv1("I", CI1, "F500116", "202612060200", service="CCM")], ctl=1))
    # 24. (2) A02: Marquez from 3W-001 to ICU^0^0 (ICU-000): 3W-001 dirty.
    msgs.append(cerner("A02", 6, "0315", [cerner_pid(**teo, fin="F500112"),
                                          cerner_pv1("I", CI0, "F500112", t_adm, prior=CW1, att=CATT2)], ctl=2))
    # 25. (3) A02: Bellamy from ICU-001 to 3W^1^3 (3W-003), a bed still dirty
    #     after message 20 (this feed sends no bed status: housekeeping has
    #     not reported it clean). DELIBERATELY PARKABLE: the bed is not free.
    msgs.append(cerner("A02", 6, "0900", [cerner_pid(**hugo, fin="F500116"),
                                          cerner_pv1("I", CW3, "F500116", "202612060200", prior=CI1, service="CCM")],
                       ctl=3))
    # 26. (4) A31: Fairweather's person record.
    msgs.append(cerner("A31", 6, "0930", [cerner_pid(**nell, phone="(217)555-0177^Home"),
                                          seg("PV1", {1: "1", 2: "O"})], ctl=4))
    # 27. (5) A04: Fairweather at the orthopaedic clinic (THOP).
    msgs.append(cerner("A04", 6, "0945", [cerner_pid(**nell, fin="F500117"),
                                          cerner_pv1("O", CORTHO, "F500117", "202612060945", service="ORT")], ctl=5))
    # 28. (6) A08: Bellamy's attending changed (he is still in ICU-001).
    msgs.append(cerner("A08", 6, "1000", [cerner_pid(**hugo, fin="F500116"),
                                          cerner_pv1("I", CI1, "F500116", "202612060200", att=CATT2, service="CCM")],
                       ctl=6))
    # 29. (7) A28: a newborn added to the person index.
    msgs.append(cerner("A28", 6, "1015", [cerner_pid(**baby), seg("PV1", {1: "1", 2: "O"})], ctl=7))
    # 30. (8) A03: Bellamy discharged from ICU-001 (dirty).
    msgs.append(cerner("A03", 6, "1400", [cerner_pid(**hugo, fin="F500116"),
                                          cerner_pv1("I", CI1, "F500116", "202612060200", service="CCM",
                                                     discharged="202612061400")], ctl=8))
    check("cerner_style.hl7", msgs, {})
    return msgs


# ---------------------------------------------------------------------------
# 3. meditech_style.hl7 — a MEDITECH-like feed as a test harness replays it.
#
# v2.4, MSH-3 MEDITECH; MSH-10 is MSG00001 for EVERY message (as in a public
# sample set whose messages were all cut from one template), so each message
# is control-id reuse and is processed for its own content; MSH-15 AL with
# MSH-16 NE (commit ACK only), AL (commit and application ACK) for the
# identifier changes, ER (application ACK on error only) for one transfer;
# MSH-18 8859/1 with Latin-1 names written as Latin-1 bytes; LF segment ends.
# A60 adverse reaction (IAM), A44/A45/A47/A50/A51/A37 with MRG, A20 bed
# status (NPU) for beds on the map and one off it, A09/A10 tracking, A23.
# ---------------------------------------------------------------------------


def mt(trig, struct, day, hhmm, body, msh15="AL", msh16="NE"):
    t = f"202612{day:02d}{hhmm}"
    head = msh({3: "MEDITECH", 4: "THMT", 5: "HMS", 6: "EDGE", 7: t + "00", 9: f"ADT^{trig}^{struct}",
                10: "MSG00001", 11: "P", 12: "2.4", 15: msh15, 16: msh16, 17: "USA", 18: "8859/1"})
    evn = seg("EVN", {1: trig, 2: t})
    return "\r".join([head, evn] + body) + "\r"


def mt_pid(mrn, name, dob, sex, acct="", addr=""):
    return seg("PID", {1: "1", 3: f"{mrn}^^^THMT^MR", 5: name, 7: dob, 8: sex, 11: addr,
                       18: f"{acct}^^^THMT^AN" if acct else ""})


def mt_pv1(cls, loc, visit, prior="", admitted=""):
    return seg("PV1", {1: "1", 2: cls, 3: loc, 6: prior, 7: "ROSSJ^Ross^Julian^^^Dr", 10: "MED" if cls == "I" else "ER",
                       19: visit, 44: admitted})


def mt_npu(pl, status):
    return seg("NPU", {1: pl, 2: status})


def mrg(mrn, acct="", visit="", alt=""):
    return seg("MRG", {1: f"{mrn}^^^THMT^MR", 3: acct, 5: visit, 6: alt})


def meditech_feed():
    ER1, ER2 = "ER^ER12^^TH", "ER^ER14^^TH"
    OFF_MAP = "5N^501^1^TH"  # a unit the appliance does not manage
    OVERFLOW = "3W^1^OF^TH"  # inside 3W, no such bed configured
    jurgen = dict(mrn="M000021", name="Müller^Jürgen", dob="19600101", sex="M")
    ines = dict(mrn="M000022", name="Gonçalves^Inês", dob="19751212", sex="F")
    ines2 = dict(ines, mrn="M000122")
    soren = dict(mrn="M000023", name="Østergaard^Søren", dob="19820303", sex="M")
    renee = dict(mrn="M000024", name="Lefèvre^Renée", dob="19820330", sex="F")
    jose = dict(mrn="M000025", name="Ibáñez^José", dob="19990909", sex="M")
    bjork = dict(mrn="M000026", name="Þórsdóttir^Björk", dob="19930415", sex="F")
    msgs = []
    # 1. A04: Müller in the ER (off the board).
    msgs.append(mt("A04", "ADT_A01", 7, "0800", [mt_pid(**jurgen, acct="A0021"), mt_pv1("E", ER1, "V0000021")]))
    # 2. A01: admitted, same visit, to 3W^0^0 (3W-000).
    msgs.append(mt("A01", "ADT_A01", 7, "0930", [mt_pid(**jurgen, acct="A0021"), mt_pv1("I", W0, "V0000021",
                                                                                       prior=ER1)]))
    # 3. A01: Gonçalves admitted to 3W^0^1 (3W-001).
    msgs.append(mt("A01", "ADT_A01", 7, "1000", [mt_pid(**ines, acct="A0022"), mt_pv1("I", W1, "V0000022")]))
    # 4. A60: Müller's adverse reaction: stored, no effect.
    msgs.append(mt("A60", "ADT_A60", 7, "1015", [
        mt_pid(**jurgen, acct="A0021"), mt_pv1("I", W0, "V0000021"),
        seg("IAM", {1: "1", 2: "DA^Drug allergy^HL70127", 3: "^Penicillin^THMT-ALG", 4: "SV^Severe^HL70128",
                    5: "Anaphylaxis", 6: "A^Add^HL70323", 11: "20261207"})]))
    # 5. A20: 3W^1^2 (3W-002) contaminated (K): blocked.
    msgs.append(mt("A20", "ADT_A20", 7, "1100", [mt_npu(W2, "K")]))
    # 6. A20: a bed of 5N, off the map, closed (C): AA, nothing.
    msgs.append(mt("A20", "ADT_A20", 7, "1105", [mt_npu(OFF_MAP, "C")]))
    # 7. A20: 3W-002 unblocked (U): dirty...
    msgs.append(mt("A20", "ADT_A20", 7, "1300", [mt_npu(W2, "U")]))
    # 8. A20: ...and cleaned (U): clean.
    msgs.append(mt("A20", "ADT_A20", 7, "1345", [mt_npu(W2, "U")]))
    # 9. A44: an account moved to Gonçalves: stored, no effect.
    msgs.append(mt("A44", "ADT_A43", 7, "1400", [mt_pid(**ines, acct="A0022"), mrg("M000922", acct="A0922")]))
    # 10. A47: her MRN M000022 replaced by M000122 (on the board too).
    msgs.append(mt("A47", "ADT_A30", 7, "1410", [mt_pid(**ines2, acct="A0022"), mrg("M000022")], msh16="AL"))
    # 11. A01: Østergaard admitted to 3W^1^2 (3W-002, clean again).
    msgs.append(mt("A01", "ADT_A01", 7, "1500", [mt_pid(**soren, acct="A0023"), mt_pv1("I", W2, "V0000023")]))
    # 12. A45: visit V0000023 was registered to the wrong person: it is
    #     Lefèvre's (3W-002 now shows her).
    msgs.append(mt("A45", "ADT_A45", 7, "1530", [mt_pid(**renee, acct="A0023"),
                                                  mrg("M000023", acct="A0023", visit="V0000023"),
                                                  mt_pv1("I", W2, "V0000023")], msh16="AL"))
    # 13. A50: Gonçalves's visit number V0000022 becomes V0000122.
    a50 = mt("A50", "ADT_A50", 7, "1600", [mt_pid(**ines2, acct="A0022"), mrg("M000122", visit="V0000022"),
                                           mt_pv1("I", W1, "V0000122")], msh16="AL")
    msgs.append(a50)
    # 14. A51: an alternate visit id changed: stored, no effect.
    msgs.append(mt("A51", "ADT_A50", 7, "1610", [mt_pid(**ines2, acct="A0022"), mrg("M000122", alt="ALT0022"),
                                                  mt_pv1("I", W1, "V0000122")]))
    # 15. A37: Müller and Gonçalves unlinked: stored, no effect.
    msgs.append(mt("A37", "ADT_A37", 7, "1620", [mt_pid(**jurgen), mt_pv1("I", W0, "V0000021"),
                                                  mt_pid(**ines2), mt_pv1("I", W1, "V0000122")]))
    # 16./17. A09/A10: Müller to radiology and back: his bed stays held.
    msgs.append(mt("A09", "ADT_A09", 7, "1700", [mt_pid(**jurgen), mt_pv1("I", W0, "V0000021")]))
    msgs.append(mt("A10", "ADT_A09", 7, "1800", [mt_pid(**jurgen), mt_pv1("I", W0, "V0000021")]))
    # 18. A04: Ibáñez in the ER (off the board).
    msgs.append(mt("A04", "ADT_A01", 8, "0100", [mt_pid(**jose, acct="A0025"), mt_pv1("E", ER1, "V0000025")]))
    # 19. A02: moved to 3W^1^3 (3W-003): an admission to the board...
    msgs.append(mt("A02", "ADT_A02", 8, "0300", [mt_pid(**jose, acct="A0025"), mt_pv1("I", W3, "V0000025",
                                                                                     prior=ER1)]))
    # 20. A12: ...cancelled: back to the ER, 3W-003 released (dirty).
    msgs.append(mt("A12", "ADT_A12", 8, "0320", [mt_pid(**jose, acct="A0025"), mt_pv1("E", ER1, "V0000025",
                                                                                     prior=W3)]))
    # 21. A04: Þórsdóttir in the ER.
    msgs.append(mt("A04", "ADT_A01", 8, "0400", [mt_pid(**bjork, acct="A0026"), mt_pv1("E", ER2, "V0000026")]))
    # 22. A17: the two ER patients swap places: two visits off the board, AA.
    msgs.append(mt("A17", "ADT_A17", 8, "0430", [mt_pid(**jose), mt_pv1("E", ER2, "V0000025", prior=ER1),
                                                  mt_pid(**bjork), mt_pv1("E", ER1, "V0000026", prior=ER2)]))
    # 23. A16: Þórsdóttir expected to leave the ER (off the board): AA.
    msgs.append(mt("A16", "ADT_A16", 8, "0500", [mt_pid(**bjork, acct="A0026"), mt_pv1("E", ER1, "V0000026")]))
    # 24. A03: she leaves the ER (off the board): AA.
    msgs.append(mt("A03", "ADT_A03", 8, "0600", [mt_pid(**bjork, acct="A0026"), mt_pv1("E", ER1, "V0000026")]))
    # 25. A13: her ER discharge cancelled: never held a bed, off the board: AA.
    msgs.append(mt("A13", "ADT_A01", 8, "0615", [mt_pid(**bjork, acct="A0026"), mt_pv1("E", ER1, "V0000026")]))
    # 26. A23: Ibáñez's ER visit deleted (registration error): off the board, AA.
    msgs.append(mt("A23", "ADT_A21", 8, "0700", [mt_pid(**jose, acct="A0025"), mt_pv1("E", ER2, "V0000025")]))
    # 27. The A50 (message 13) again, later MSH-7: the harness replays it. A
    #     duplicate: the same two ACKs, nothing applied (processed again it
    #     would fail: V0000122 is already on the board).
    msgs.append(a50.replace("20261207160000||", "20261208071500||", 1))
    # 28. A02: Müller to an overflow bed 3W^1^OF, which is inside 3W but not
    #     configured on the appliance. DELIBERATELY PARKABLE: an unknown
    #     room/bed in a managed point of care. MSH-16 ER: CA, then AE.
    msgs.append(mt("A02", "ADT_A02", 8, "0800", [mt_pid(**jurgen, acct="A0021"), mt_pv1("I", OVERFLOW, "V0000021",
                                                                                       prior=W0)], msh16="ER"))
    # 29. A03: Müller discharged (the sender thinks from the overflow bed):
    #     his visit's bed on the board, 3W-000, becomes dirty.
    msgs.append(mt("A03", "ADT_A03", 8, "1100", [mt_pid(**jurgen, acct="A0021"), mt_pv1("I", OVERFLOW, "V0000021")]))
    # 30. A20: housekeeping reports 3W-000 clean (U).
    msgs.append(mt("A20", "ADT_A20", 8, "1230", [mt_npu(W0, "U")]))
    # 31. A08: Gonçalves's address (Latin-1).
    msgs.append(mt("A08", "ADT_A01", 8, "1300", [
        mt_pid(**ines2, acct="A0022", addr="Rua São João 12^^Évora^^7000-100^PRT"), mt_pv1("I", W1, "V0000122")]))
    # 32. A40: a duplicate record of Østergaard merged into his (index only).
    msgs.append(mt("A40", "ADT_A39", 8, "1400", [mt_pid(**soren), mrg("M000923")], msh16="AL"))
    check("meditech_style.hl7", msgs, {26: 12})
    return msgs


if __name__ == "__main__":
    write("epic_style.hl7", epic_feed(), "\r", "ascii")
    write("cerner_style.hl7", cerner_feed(), "\r\n", "ascii")
    write("meditech_style.hl7", meditech_feed(), "\n", "latin-1")
