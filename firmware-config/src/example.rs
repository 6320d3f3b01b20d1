//! A generated, realistic hospital configuration of any size.
//!
//! The mix follows a general acute hospital: intensive care (about 8 % of
//! beds), step-down, medical and surgical wards, maternity, paediatrics and an
//! ED observation unit. Units hold 8 to 40 beds (fewer only when the whole
//! hospital is smaller than 8 beds), rooms 1 to 4, with isolation-capable
//! single rooms, telemetry, a few bariatric beds and a few single-sex bays.
//! From 1,000 beds on, the units are spread over two campuses. After the
//! beds comes the main campus's OR suite: one operating room per 100 beds,
//! 2 to 20 of them.
//!
//! The output is a pure function of its arguments: no clock, no randomness.

use std::fmt::Write as _;

/// Smallest unit generated (unless the hospital itself is smaller).
const MIN_UNIT: usize = 8;
/// Largest unit generated.
const MAX_UNIT: usize = 40;
/// From this many beds on, a second campus is generated.
const TWO_CAMPUSES: usize = 1000;
/// Fewest operating rooms generated.
const MIN_OR_ROOMS: usize = 2;
/// Most operating rooms generated.
const MAX_OR_ROOMS: usize = 20;
/// Beds per operating room.
const BEDS_PER_OR_ROOM: usize = 100;
/// The OR suite's id.
const OR_SUITE: &str = "MAIN-OR";

const ISO: u8 = 1;
const TELE: u8 = 2;
const BARI: u8 = 4;
const FEMALE: u8 = 8;
const MALE: u8 = 16;

/// A kind of unit: its id prefix, name, level of care, share of the beds (per
/// mille), the size its units grow to before it is split (at most
/// [`MAX_UNIT`], at least twice [`MIN_UNIT`]) and the cycle of rooms it is
/// built from (beds per room, flags).
struct Specialty {
    prefix: &'static str,
    name: &'static str,
    level: &'static str,
    share: usize,
    max_unit: usize,
    rooms: &'static [(usize, u8)],
}

/// The specialties; the medical one (index [`MEDICAL`]) absorbs any specialty
/// too small to make a unit of its own.
const SPECIALTIES: &[Specialty] = &[
    Specialty {
        prefix: "ICU",
        name: "Intensive Care",
        level: "icu",
        share: 80,
        max_unit: 16,
        rooms: &[(1, ISO | TELE)],
    },
    Specialty {
        prefix: "SDU",
        name: "Step-Down",
        level: "step_down",
        share: 100,
        max_unit: 24,
        rooms: &[(1, ISO | TELE), (2, TELE), (2, TELE)],
    },
    Specialty {
        prefix: "MED",
        name: "Medical",
        level: "acute",
        share: 320,
        max_unit: 32,
        rooms: &[
            (1, ISO),
            (2, 0),
            (4, FEMALE),
            (2, TELE),
            (1, BARI),
            (4, MALE),
            (2, 0),
            (4, 0),
        ],
    },
    Specialty {
        prefix: "SUR",
        name: "Surgical",
        level: "acute",
        share: 250,
        max_unit: 32,
        rooms: &[
            (1, ISO),
            (2, 0),
            (4, MALE),
            (2, 0),
            (1, BARI),
            (4, FEMALE),
            (2, TELE),
            (3, 0),
        ],
    },
    Specialty {
        prefix: "MAT",
        name: "Maternity",
        level: "maternity",
        share: 80,
        max_unit: 28,
        rooms: &[(1, FEMALE), (2, FEMALE), (1, FEMALE | ISO)],
    },
    Specialty {
        prefix: "PED",
        name: "Paediatrics",
        level: "pediatric",
        share: 80,
        max_unit: 24,
        rooms: &[(1, ISO), (2, 0), (1, 0), (3, 0)],
    },
    Specialty {
        prefix: "OBS",
        name: "ED Observation",
        level: "observation",
        share: 90,
        max_unit: 20,
        rooms: &[(2, TELE), (4, 0), (1, ISO), (3, 0)],
    },
];

/// Index of the medical specialty in [`SPECIALTIES`].
const MEDICAL: usize = 2;

/// A campus: facility, its one building, and the HL7 facility code.
struct Campus {
    facility: &'static str,
    facility_name: &'static str,
    building: &'static str,
    building_name: &'static str,
}

const CAMPUSES: [Campus; 2] = [
    Campus {
        facility: "MAIN",
        facility_name: "Main Campus",
        building: "main",
        building_name: "Main building",
    },
    Campus {
        facility: "NORTH",
        facility_name: "North Campus",
        building: "north",
        building_name: "North pavilion",
    },
];

/// A unit to generate.
struct PlannedUnit {
    specialty: &'static Specialty,
    id: String,
    name: String,
    beds: usize,
    campus: usize,
    floor: usize,
    wing: usize,
}

/// Generates the TOML configuration of a hospital with `beds` beds whose
/// `[node] hospital_id` is `hospital_id`.
///
/// The result lints clean for any `beds` from 1 on and a valid hospital id;
/// with 0 beds it describes no bed and fails the check that asks for one.
pub fn example(beds: usize, hospital_id: &str) -> String {
    let units = plan(beds);
    let campuses = if beds >= TWO_CAMPUSES { 2 } else { 1 };
    let name = display_name(hospital_id);
    let mut out = String::with_capacity(beds * 200 + 4096);
    let w = &mut out;

    line(
        w,
        format_args!("# HMS Edge appliance configuration: {name}."),
    );
    line(
        w,
        format_args!(
            "# {beds} beds in {} units on {campuses} campus{}.",
            units.len(),
            if campuses == 1 { "" } else { "es" }
        ),
    );
    line(
        w,
        format_args!("# Generated by `hms-config example --beds {beds} --hospital {hospital_id}`;"),
    );
    line(w, format_args!("# check it with `hms-config lint FILE`."));
    line(w, format_args!(""));
    line(w, format_args!("[node]"));
    line(w, format_args!("hospital_id = {}", quoted(hospital_id)));
    line(w, format_args!("region = \"eu-west\""));
    line(w, format_args!("node_id = \"edge-1\""));
    line(w, format_args!("name = {}", quoted(&name)));
    line(w, format_args!("timezone = \"Europe/Warsaw\""));
    line(w, format_args!(""));
    line(w, format_args!("[listen]"));
    line(w, format_args!("http = \"127.0.0.1:8080\""));
    line(w, format_args!("mllp = \"127.0.0.1:2575\""));
    line(w, format_args!(""));
    line(w, format_args!("[store]"));
    line(w, format_args!("data_dir = \"data\""));

    for campus in &CAMPUSES[..campuses] {
        line(w, format_args!(""));
        line(w, format_args!("[[facility]]"));
        line(w, format_args!("id = \"{}\"", campus.facility));
        line(w, format_args!("name = \"{}\"", campus.facility_name));
        line(w, format_args!(""));
        line(w, format_args!("[[building]]"));
        line(w, format_args!("id = \"{}\"", campus.building));
        line(w, format_args!("facility = \"{}\"", campus.facility));
        line(w, format_args!("name = \"{}\"", campus.building_name));
    }
    for (c, campus) in CAMPUSES[..campuses].iter().enumerate() {
        let floors = units
            .iter()
            .filter(|u| u.campus == c)
            .map(|u| u.floor)
            .max()
            .unwrap_or(0);
        for floor in 1..=floors {
            line(w, format_args!(""));
            line(w, format_args!("[[floor]]"));
            line(w, format_args!("id = \"{}-{floor}\"", campus.building));
            line(w, format_args!("building = \"{}\"", campus.building));
            line(w, format_args!("name = \"Floor {floor}\""));
        }
    }

    for unit in &units {
        write_unit(w, unit);
    }
    write_or_suite(w, or_rooms(beds));
    out
}

/// How many operating rooms a hospital of `beds` beds gets.
fn or_rooms(beds: usize) -> usize {
    (beds / BEDS_PER_OR_ROOM).clamp(MIN_OR_ROOMS, MAX_OR_ROOMS)
}

/// The OR suite on the main campus: `OR-01`… at point of care `OR` of the
/// main campus's facility, the room in PL-2 and no bed.
fn write_or_suite(w: &mut String, rooms: usize) {
    let campus = &CAMPUSES[0];
    line(w, format_args!(""));
    line(
        w,
        format_args!(
            "# Operating rooms: suite {OR_SUITE}, {rooms} rooms, {}.",
            campus.facility_name
        ),
    );
    line(
        w,
        format_args!("# SIU scheduling messages (AIL-3) name these locations."),
    );
    for n in 1..=rooms {
        line(w, format_args!(""));
        line(w, format_args!("[[or_room]]"));
        line(w, format_args!("id = \"OR-{n:02}\""));
        line(w, format_args!("name = \"Operating Room {n}\""));
        line(w, format_args!("suite = \"{OR_SUITE}\""));
        line(
            w,
            format_args!(
                "hl7 = {{ facility = \"{}\", point_of_care = \"OR\", room = \"OR-{n:02}\", bed = \"\" }}",
                campus.facility
            ),
        );
    }
}

/// Splits `beds` into units.
fn plan(beds: usize) -> Vec<PlannedUnit> {
    let mut per_specialty = vec![0; SPECIALTIES.len()];
    if beds < MIN_UNIT {
        per_specialty[MEDICAL] = beds;
    } else {
        // Largest-remainder apportionment of the shares, then fold specialties
        // too small for a unit into the medical one.
        let total: usize = SPECIALTIES.iter().map(|s| s.share).sum();
        let mut remainders = Vec::with_capacity(SPECIALTIES.len());
        for (i, s) in SPECIALTIES.iter().enumerate() {
            per_specialty[i] = beds * s.share / total;
            remainders.push((beds * s.share % total, i));
        }
        let given: usize = per_specialty.iter().sum();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().take(beds - given) {
            per_specialty[i] += 1;
        }
        for i in 0..SPECIALTIES.len() {
            if i != MEDICAL && per_specialty[i] < MIN_UNIT {
                per_specialty[MEDICAL] += per_specialty[i];
                per_specialty[i] = 0;
            }
        }
    }

    let campuses = if beds >= TWO_CAMPUSES { 2 } else { 1 };
    let mut units = Vec::new();
    let mut per_campus = [0usize; 2];
    for (specialty, &count) in SPECIALTIES.iter().zip(&per_specialty) {
        if count == 0 {
            continue;
        }
        let parts = count.div_ceil(specialty.max_unit.min(MAX_UNIT));
        for part in 0..parts {
            let size = count / parts + usize::from(part < count % parts);
            let (id, name) = if parts == 1 {
                (specialty.prefix.to_owned(), specialty.name.to_owned())
            } else {
                (
                    format!("{}{}", specialty.prefix, part + 1),
                    format!("{} {}", specialty.name, part + 1),
                )
            };
            let campus = units.len() % campuses;
            let slot = per_campus[campus];
            per_campus[campus] += 1;
            units.push(PlannedUnit {
                specialty,
                id,
                name,
                beds: size,
                campus,
                floor: slot / 2 + 1,
                wing: slot % 2,
            });
        }
    }
    units
}

fn write_unit(w: &mut String, unit: &PlannedUnit) {
    let campus = &CAMPUSES[unit.campus];
    let wing = if unit.wing == 0 { "West" } else { "East" };
    line(w, format_args!(""));
    line(
        w,
        format_args!(
            "# {}: {} beds, floor {} {wing}, {}.",
            unit.name, unit.beds, unit.floor, campus.facility_name
        ),
    );
    line(w, format_args!("[[unit]]"));
    line(w, format_args!("id = \"{}\"", unit.id));
    line(
        w,
        format_args!("floor = \"{}-{}\"", campus.building, unit.floor),
    );
    line(w, format_args!("name = \"{}\"", unit.name));
    line(
        w,
        format_args!("level_of_care = \"{}\"", unit.specialty.level),
    );

    let mut left = unit.beds;
    let mut number = unit.floor * 100 + unit.wing * 50;
    let pattern = unit.specialty.rooms;
    let mut i = 0;
    while left > 0 {
        let (size, flags) = pattern[i % pattern.len()];
        let size = size.min(left);
        left -= size;
        i += 1;
        number += 1;
        let room = format!("{}-{number}", unit.id);
        line(w, format_args!(""));
        line(w, format_args!("[[room]]"));
        line(w, format_args!("id = \"{room}\""));
        line(w, format_args!("unit = \"{}\"", unit.id));
        line(w, format_args!("name = \"{number}\""));
        for b in 0..size {
            let letter = char::from(b'A' + u8::try_from(b).unwrap_or(0));
            line(w, format_args!(""));
            line(w, format_args!("[[bed]]"));
            line(w, format_args!("id = \"{room}-{letter}\""));
            line(w, format_args!("room = \"{room}\""));
            if flags & FEMALE != 0 {
                line(w, format_args!("gender = \"female\""));
            } else if flags & MALE != 0 {
                line(w, format_args!("gender = \"male\""));
            }
            if flags & ISO != 0 {
                line(w, format_args!("isolation_capable = true"));
            }
            if flags & TELE != 0 {
                line(w, format_args!("telemetry = true"));
            }
            if flags & BARI != 0 {
                line(w, format_args!("bariatric = true"));
            }
            if size > 1 && b == 0 {
                line(w, format_args!("tags = [\"window\"]"));
            }
            line(
                w,
                format_args!(
                    "hl7 = {{ facility = \"{}\", point_of_care = \"{}\", room = \"{number}\", bed = \"{letter}\" }}",
                    campus.facility, unit.id
                ),
            );
        }
    }
}

fn line(w: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = w.write_fmt(args);
    w.push('\n');
}

/// `metro-general` → `Metro General`.
fn display_name(hospital_id: &str) -> String {
    let words: Vec<String> = hospital_id
        .split(['-', '_', '.', ':'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect();
    if words.is_empty() {
        hospital_id.to_owned()
    } else {
        words.join(" ")
    }
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_bed_with_units_of_8_to_40() {
        for beds in [8, 9, 24, 25, 40, 41, 100, 333, 999, 1000, 2000, 5000] {
            let units = plan(beds);
            assert_eq!(units.iter().map(|u| u.beds).sum::<usize>(), beds, "{beds}");
            for u in &units {
                assert!(
                    (MIN_UNIT..=MAX_UNIT).contains(&u.beds),
                    "{beds}: {}",
                    u.beds
                );
            }
        }
        assert_eq!(plan(1).len(), 1);
        for s in SPECIALTIES {
            assert!(
                (2 * MIN_UNIT..=MAX_UNIT).contains(&s.max_unit),
                "{}",
                s.prefix
            );
        }
        assert_eq!(plan(7)[0].beds, 7);
    }

    #[test]
    fn icu_is_about_eight_percent() {
        let units = plan(2000);
        let icu: usize = units
            .iter()
            .filter(|u| u.specialty.level == "icu")
            .map(|u| u.beds)
            .sum();
        assert_eq!(icu, 160);
        assert!(units.iter().any(|u| u.campus == 1));
    }

    #[test]
    fn one_operating_room_per_100_beds_from_2_to_20() {
        assert_eq!(or_rooms(1), 2);
        assert_eq!(or_rooms(100), 2);
        assert_eq!(or_rooms(300), 3);
        assert_eq!(or_rooms(2000), 20);
        assert_eq!(or_rooms(5000), 20);
        let rooms = |beds| {
            example(beds, "metro-general")
                .matches("[[or_room]]")
                .count()
        };
        assert_eq!(rooms(2000), 20);
        assert_eq!(rooms(100), 2);
        let text = example(2000, "metro-general");
        assert!(text.contains(
            "[[or_room]]\nid = \"OR-20\"\nname = \"Operating Room 20\"\nsuite = \"MAIN-OR\"\n\
             hl7 = { facility = \"MAIN\", point_of_care = \"OR\", room = \"OR-20\", bed = \"\" }\n"
        ));
        assert!(!text.contains("OR-21"));
    }

    #[test]
    fn names_and_quoting() {
        assert_eq!(display_name("metro-general"), "Metro General");
        assert_eq!(display_name("--"), "--");
        assert_eq!(quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
