"""Writes the HL7 test corpus of edge-node's data-driven tests (tests/it/corpus.rs).

Run from this folder: python3 generate.py. The files are committed; this script
documents how they were made. Locations: 3W-000 = 3W^0^0^TH, 3W-001 = 3W^0^1^TH,
3W-002 = 3W^1^2^TH, 3W-003 = 3W^1^3^TH, ICU-000 = ICU^0^0^TH, ICU-001 = ICU^1^1^TH.
"""


def msh(trig, ctl, struct="ADT_A01", ver="2.5.1", extra="", enc="^~\\&"):
    return f"MSH|{enc}|EPIC|TH|HMS|EDGE|20261127101500||ADT^{trig}^{struct}|{ctl}|P|{ver}{extra}"


def pid(mrn="MRN-1", name="Doe^Jane", dob="19700102", sex="F"):
    return f"PID|1||{mrn}^^^TH^MR||{name}||{dob}|{sex}"


def pv1(pl="", visit="V1", prior="", pending=""):
    f = ["PV1", "1", "I", pl, "", "", prior] + [""] * 12 + [visit]
    while len(f) < 43:
        f.append("")
    f[42] = pending
    return "|".join(f).rstrip("|")


def evn(trig, t="20261127101500"):
    return f"EVN|{trig}|{t}"


def msg(*segs):
    return "\r".join(segs) + "\r"


def w(name, *msgs, sep="\r", bom=False):
    data = "".join(msgs)
    if sep != "\r":
        data = data.replace("\r", sep)
    b = data.encode("utf-8")
    if bom:
        b = b"\xef\xbb\xbf" + b
    with open(name, "wb") as f:
        f.write(b)


def A(trig, ctl, pl, visit="V1", mrn="MRN-1", name="Doe^Jane", sex="F", prior="", pending=""):
    return msg(msh(trig, ctl), evn(trig), pid(mrn, name, sex=sex), pv1(pl, visit, prior, pending))


W0, W1, W2, W3 = "3W^0^0^TH", "3W^0^1^TH", "3W^1^2^TH", "3W^1^3^TH"
I0, I1 = "ICU^0^0^TH", "ICU^1^1^TH"
RICK = dict(visit="V2", mrn="MRN-2", name="Roe^Rick", sex="M")


def npu(ctl, pl, status):
    return msg(msh("A20", ctl, "ADT_A20"), evn("A20"), f"NPU|{pl}|{status}")


w("a01_admit.hl7", A("A01", "C1", W0))
w("a01_a02_a03_a13_stay.hl7", A("A01", "C1", W0), A("A02", "C2", W2, prior=W0), A("A03", "C3", W2), A("A13", "C4", W2))
w("a11_cancel_admit.hl7", A("A01", "C1", W0), A("A11", "C2", W0))
w("a12_cancel_transfer.hl7", A("A01", "C1", W0), A("A02", "C2", I0, prior=W0), A("A12", "C3", W0, prior=I0))
w("a12_out_of_order.hl7", A("A01", "C1", W0), A("A02", "C2", I0, prior=W0), A("A02", "C3", I1, prior=I0), A("A12", "C4", W0, prior=I0))
w("a13_bed_taken.hl7", A("A01", "C1", W0), A("A03", "C2", W0), npu("C3", W0, "U"), A("A01", "C4", W0, **RICK), A("A13", "C5", W0))
w("a05_preadmit.hl7", A("A05", "C1", "", visit="V3", mrn="MRN-3", pending=I1))
w("a05_a38_preadmit.hl7", A("A05", "C1", "", visit="V3", mrn="MRN-3", pending=I1), A("A38", "C2", "", visit="V3", mrn="MRN-3"))
w("a14_a27_pending_admit.hl7", A("A14", "C1", W3, visit="V4", mrn="MRN-4"), A("A14", "C2", W3, visit="V5", mrn="MRN-5"), A("A27", "C3", W3, visit="V4", mrn="MRN-4"))
RITA = dict(visit="V2", mrn="MRN-2", name="Roe^Rita")
w("a16_a25_pending_discharge.hl7", A("A01", "C1", W0), A("A01", "C2", W1, **RITA), A("A16", "C3", W0), A("A16", "C4", W1, **RITA), A("A25", "C5", W1, **RITA))
SWAP = msg(msh("A17", "C3", "ADT_A17"), evn("A17"), pid(), pv1(I0, "V1"), pid("MRN-2", "Roe^Rick", sex="M"), pv1(W0, "V2"))
w("a17_swap.hl7", A("A01", "C1", W0), A("A01", "C2", I0, **RICK), SWAP)
w("a17_swap_missing_bed.hl7", A("A01", "C1", W0), SWAP.replace("|C3|", "|C2|"))
w("a21_a22_leave.hl7", A("A01", "C1", W0), A("A21", "C2", W0), A("A22", "C3", W0))
w("a20_bed_status.hl7", npu("C1", I0, "C"), npu("C2", W1, "H"), npu("C3", W2, "I"), npu("C4", I0, "U"), npu("C5", W3, "X"), npu("C6", "9Z^9^9^TH", "C"))
w("a28_a31_a08_person.hl7",
  msg(msh("A28", "C1", "ADT_A05"), evn("A28"), pid("MRN-7", "Poe^Pat", sex="")),
  msg(msh("A31", "C2", "ADT_A05"), evn("A31"), pid("MRN-7", "Poe^Patricia", sex="F")),
  A("A01", "C3", W0, visit="V7", mrn="MRN-7", name="Poe^Patricia"),
  A("A08", "C4", W1, visit="V7", mrn="MRN-7", name="Poe^Patty"))
w("a40_merge.hl7", A("A01", "C1", W0, mrn="MRN-OLD"),
  msg(msh("A40", "C2", "ADT_A39"), evn("A40"), pid("MRN-NEW", "Doe^Jane"), "MRG|MRN-OLD^^^TH^MR"))
w("a04_a06_a07_a09_a10.hl7", A("A04", "C1", ""), A("A01", "C2", W0), A("A06", "C3", W0), A("A07", "C4", W0), A("A09", "C5", W0), A("A10", "C6", W0))
w("a15_pending_transfer.hl7", A("A01", "C1", W0), A("A15", "C2", W0, pending=I0))
w("a15_a26_pending_transfer_cancelled.hl7", A("A01", "C1", W0), A("A15", "C2", W0, pending=I0), A("A26", "C3", W0))
w("a15_a02_pending_transfer_done.hl7", A("A01", "C1", W0), A("A15", "C2", W0, pending=I0), A("A02", "C3", I0, prior=W0))
w("a37_no_effect.hl7", A("A01", "C1", W0), A("A37", "C2", W0))
w("lf_endings.hl7", A("A01", "C1", W0), sep="\n")
w("crlf_endings.hl7", A("A01", "C1", W0), sep="\r\n")
w("bom.hl7", A("A01", "C1", W0), bom=True)
w("v27_msh2.hl7", msg(msh("A01", "C1", ver="2.7", enc="^~\\&#"), evn("A01"), pid(), pv1(W0, "V1")))
with open("latin1_names.hl7", "wb") as f:
    f.write(msg(msh("A01", "C1", extra="|||||DE|8859/1"), evn("A01"), pid(name="M\u00fcller^J\u00fcrgen", sex="M"), pv1(W0, "V1")).encode("latin-1"))
w("escapes_after_non_ascii.hl7", msg(msh("A01", "C1"), evn("A01"), pid(name="M\u00fcller\\T\\Schmidt^Zo\u00eb\\S\\Ann", sex="F"), pv1(W0, "V1")))
w("z_segments.hl7", msg(msh("A01", "C1"), evn("A01"), pid(), "ZPI|custom|data^with^components", pv1(W0, "V1"), "ZBE|1|2|3"))
w("batch.hl7", "FHS|^~\\&|EPIC|TH\rBHS|^~\\&|EPIC|TH\r", A("A01", "C1", W0), A("A01", "C2", W2, **RICK), A("A03", "C3", W0), "BTS|3\rFTS|1\r", sep="\r\n")
w("malformed.hl7",
  "PID|1||NO-MSH\r",
  "MSH|^~|EPIC|TH|HMS|EDGE|2026||ADT^A01|M2|P|2.5\rPID|1||X\r",
  msg(msh("A01", "M3"), "pid|lowercase segment id"),
  msg(msh("A01", "M4"), evn("A01"), "PID|1||^^^TH^MR||Doe^Jane", pv1(W0, "V9")),
  msg(msh("A01", "M5"), evn("A01"), pid(), "PV1|1|I|3W^0^0^TH"),
  msg(msh("A01", "M6"), evn("A01"), pid(), pv1("3W^9^9^TH", "V9")),
  msg(msh("A01", "M7", extra="|||||DE|ISO IR87"), evn("A01"), pid(), pv1(W0, "V9")),
  msg(msh("A01", "M8"), evn("A01"), pv1(W0, "V9")),
  msg("MSH|^~\\&|EPIC|TH|HMS|EDGE|2026||ORU^R01|M9|P|2.5", "PID|1||MRN-1^^^TH^MR"))

# Visits off the board: emergency (ED) and a clinic are outside the managed
# points of care (3W, ICU); 3W^9^9^TH is inside 3W but not a configured bed.
ED, CLINIC = "ED^^^TH", "CLIN^12^^TH"
RITA3 = dict(visit="V3", mrn="MRN-3", name="Poe^Pat")
w("off_board_visits.hl7",
  A("A01", "C1", ED), A("A02", "C2", W0, prior=ED), A("A02", "C3", CLINIC, prior=W0), A("A03", "C4", CLINIC),
  A("A01", "C5", ED, **RICK), A("A16", "C6", ED, **RICK), A("A13", "C7", ED, **RICK),
  A("A01", "C8", I0, **RITA3), A("A02", "C9", ED, prior=I0, **RITA3), A("A12", "C10", I0, prior=ED, **RITA3),
  A("A02", "C11", "3W^9^9^TH", **RICK))


def pv1_admitted(pl, admitted):
    f = ["PV1", "1", "I", pl] + [""] * 41
    f[44] = admitted
    return "|".join(f).rstrip("|")


w("visit_without_number.hl7",
  msg(msh("A01", "C1"), evn("A01"), pid("MRN-5", "Ode^Ann"), pv1_admitted(W1, "202611270930")),
  msg(msh("A03", "C2"), evn("A03"), pid("MRN-5", "Ode^Ann"), pv1_admitted(W1, "20261127093000")),
  msg(msh("A01", "C3"), evn("A01"), pid("MRN-6", "Ode^Bob", sex="M"), pv1_admitted(W3, "202611271000")),
  msg(msh("A01", "C4"), evn("A01"), pid("MRN-7", "Ode^Cy", sex="M"), "PV1|1|I|" + W2))


def mrg(prior_mrn, prior_visit=""):
    return f"MRG|{prior_mrn}^^^TH^MR||||{prior_visit}".rstrip("|")


w("identifier_changes.hl7",
  A("A01", "C1", W0),
  msg(msh("A50", "C2", "ADT_A50"), evn("A50"), pid(), mrg("MRN-1", "V1"), pv1(W0, "V7")),
  A("A08", "C3", W0, visit="V7"),
  A("A01", "C4", W1, **RITA),
  msg(msh("A47", "C5", "ADT_A30"), evn("A47"), pid("MRN-9", "Roe^Rita"), mrg("MRN-2")),
  A("A01", "C6", I0, **RITA3),
  msg(msh("A45", "C7", "ADT_A45"), evn("A45"), pid("MRN-4", "Poe^Patrick", sex="M"), mrg("MRN-3", "V3"), pv1(I0, "V3")),
  msg(msh("A60", "C8", "ADT_A60"), evn("A60"), pid(), "IAM|1|DA|^Penicillin"),
  msg(msh("A44", "C9", "ADT_A43"), evn("A44"), pid(), mrg("MRN-1")),
  msg(msh("A51", "C10", "ADT_A50"), evn("A51"), pid(), mrg("MRN-1", "V7"), pv1(W0, "V7")),
  msg(msh("A37", "C11", "ADT_A37"), evn("A37"), pid(), pid("MRN-2", "Roe^Rita")),
  msg(msh("A54", "C12", "ADT_A54"), evn("A54"), pid(), pv1(W0, "V7")),
  msg(msh("A50", "C13", "ADT_A50"), evn("A50"), pid(), "MRG|MRN-1^^^TH^MR", pv1(W0, "V8")))

w("control_id_reuse.hl7",
  A("A01", "C1", W0),
  msg(msh("A28", "C1", "ADT_A05"), evn("A28"), pid("MRN-2", "Roe^Rita")),
  A("A01", "C1", W0).replace("20261127101500||", "20261127101733||", 1),
  A("A03", "C1", W0))
