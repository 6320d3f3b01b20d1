//! Board tests: transitions, versions, placement rules and a property test over
//! random interleavings (no double occupancy, replay == live).

use super::*;
use hms_domain::{Mrn, RoomId};
use proptest::prelude::*;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn attrs(room: Option<&str>) -> BedAttributes {
    BedAttributes {
        gender: GenderRestriction::Any,
        isolation_capable: false,
        telemetry: false,
        bariatric: false,
        level_of_care: LevelOfCare::Acute,
        room: room.map(|r| RoomId::new(r).unwrap()),
        tags: vec![],
    }
}

fn bed(id: &str) -> BedId {
    BedId::new(id).unwrap()
}

fn enc(id: &str) -> EncounterId {
    EncounterId::new(id).unwrap()
}

fn unit(id: &str) -> UnitId {
    UnitId::new(id).unwrap()
}

/// A board with the given beds `(id, unit, attributes)`, plus the changes that built it.
fn board_with(beds: Vec<(&str, &str, BedAttributes)>) -> (Board, Vec<EventBody>) {
    let mut b = Board::new();
    let mut log = vec![];
    for (id, u, a) in beds {
        log.extend(
            b.apply(
                Command::Commission {
                    bed: bed(id),
                    unit: unit(u),
                    attributes: a,
                },
                t(0),
            )
            .unwrap(),
        );
    }
    (b, log)
}

fn patient(sex: Sex) -> PatientRef {
    PatientRef {
        mrn: Mrn::new("M1"),
        name: None,
        birth_date: None,
        sex: Some(sex),
    }
}

fn place(b: &mut Board, u: &str, e: &str, req: Requirements) -> Result<BedId, BoardError> {
    let changes = b.apply(
        Command::Place {
            unit: unit(u),
            encounter: enc(e),
            patient: req.sex.map(patient),
            requirements: req,
        },
        t(1),
    )?;
    match &changes[..] {
        [EventBody::BedStateChanged { bed, .. }] => Ok(bed.clone()),
        other => panic!("unexpected changes {other:?}"),
    }
}

#[test]
fn lifecycle_of_a_bed() {
    let (mut b, _) = board_with(vec![("B1", "U", attrs(None))]);
    let v = |b: &Board| b.bed("B1").unwrap().version;
    assert_eq!(v(&b), 1);
    let assign = |version| Command::Assign {
        bed: bed("B1"),
        encounter: enc("E1"),
        patient: None,
        expected_version: Some(version),
    };
    b.apply(assign(1), t(1)).unwrap();
    assert_eq!(b.bed("B1").unwrap().state.name(), "occupied");
    // A second assignment of an occupied bed is refused, whatever the version.
    assert!(matches!(
        b.apply(assign(2), t(2)),
        Err(BoardError::InvalidTransition {
            state: "occupied",
            ..
        })
    ));
    b.apply(
        Command::Release {
            bed: bed("B1"),
            expected_version: Some(2),
        },
        t(3),
    )
    .unwrap();
    assert_eq!(b.bed("B1").unwrap().state, BedState::VacantDirty);
    // Dirty beds cannot be assigned.
    assert!(b.apply(assign(3), t(4)).is_err());
    for to in [Housekeeping::Cleaning, Housekeeping::Clean] {
        let version = Some(v(&b));
        b.apply(
            Command::Housekeeping {
                bed: bed("B1"),
                to,
                expected_version: version,
            },
            t(5),
        )
        .unwrap();
    }
    assert_eq!(b.bed("B1").unwrap().state, BedState::VacantClean);
    assert_eq!(v(&b), 5);
    assert_eq!(b.bed("B1").unwrap().since, t(5));
}

#[test]
fn stale_version_is_refused_with_the_current_version() {
    let (mut b, _) = board_with(vec![("B1", "U", attrs(None))]);
    let err = b
        .apply(
            Command::Housekeeping {
                bed: bed("B1"),
                to: Housekeeping::Dirty,
                expected_version: Some(7),
            },
            t(1),
        )
        .unwrap_err();
    assert_eq!(
        err,
        BoardError::StaleVersion {
            bed: bed("B1"),
            expected: 7,
            current: 1
        }
    );
    assert_eq!(b.bed("B1").unwrap().version, 1, "nothing changed");
}

#[test]
fn blocked_and_reserved_beds() {
    let (mut b, _) = board_with(vec![("B1", "U", attrs(None)), ("B2", "U", attrs(None))]);
    b.apply(
        Command::Block {
            bed: bed("B1"),
            reason: "broken rail".into(),
            until: Some(t(99)),
            expected_version: None,
        },
        t(1),
    )
    .unwrap();
    b.apply(
        Command::Reserve {
            bed: bed("B2"),
            encounter: enc("E1"),
            patient: Some(patient(Sex::Male)),
            expected_version: Some(1),
        },
        t(1),
    )
    .unwrap();
    let c = b.view().census("U").unwrap();
    assert_eq!(
        (c.blocked, c.reserved, c.pending_in, c.available),
        (1, 1, 1, 0)
    );
    // No free bed left for placement.
    assert_eq!(
        place(&mut b, "U", "E2", Requirements::default()),
        Err(BoardError::NoBedAvailable { unit: unit("U") })
    );
    // The reserved stay may be assigned its bed and keeps its patient.
    b.apply(
        Command::Assign {
            bed: bed("B2"),
            encounter: enc("E1"),
            patient: None,
            expected_version: Some(2),
        },
        t(2),
    )
    .unwrap();
    assert_eq!(
        b.bed("B2").unwrap().patient.as_ref().and_then(|p| p.sex),
        Some(Sex::Male)
    );
    // Unblocking leaves the bed dirty.
    b.apply(
        Command::Unblock {
            bed: bed("B1"),
            expected_version: None,
        },
        t(3),
    )
    .unwrap();
    assert_eq!(b.bed("B1").unwrap().state, BedState::VacantDirty);
}

#[test]
fn an_encounter_holds_one_bed() {
    let (mut b, _) = board_with(vec![("B1", "U", attrs(None)), ("B2", "U", attrs(None))]);
    place(&mut b, "U", "E1", Requirements::default()).unwrap();
    let err = b
        .apply(
            Command::Assign {
                bed: bed("B2"),
                encounter: enc("E1"),
                patient: None,
                expected_version: None,
            },
            t(2),
        )
        .unwrap_err();
    assert_eq!(
        err,
        BoardError::EncounterAlreadyPlaced {
            encounter: enc("E1"),
            bed: bed("B1")
        }
    );
}

#[test]
fn placement_respects_requirements_and_saves_special_beds() {
    let iso = BedAttributes {
        isolation_capable: true,
        ..attrs(Some("R1"))
    };
    let tele = BedAttributes {
        telemetry: true,
        ..attrs(Some("R2"))
    };
    let female = BedAttributes {
        gender: GenderRestriction::Female,
        ..attrs(Some("R3"))
    };
    let (mut b, _) = board_with(vec![
        ("A-iso", "U", iso),
        ("B-tele", "U", tele),
        ("C-fem", "U", female),
        ("D1", "U", attrs(Some("R4"))),
        ("D2", "U", attrs(Some("R4"))),
    ]);
    // A plain male patient goes to a plain bed, not the isolation or telemetry one.
    assert_eq!(
        place(
            &mut b,
            "U",
            "E1",
            Requirements {
                sex: Some(Sex::Male),
                ..Default::default()
            }
        ),
        Ok(bed("D1"))
    );
    // A female patient must not share room R4 with him: the female-only bed is next.
    assert_eq!(
        place(
            &mut b,
            "U",
            "E2",
            Requirements {
                sex: Some(Sex::Female),
                ..Default::default()
            }
        ),
        Ok(bed("C-fem"))
    );
    // Isolation goes to the isolation-capable bed.
    assert_eq!(
        place(
            &mut b,
            "U",
            "E3",
            Requirements {
                isolation: true,
                ..Default::default()
            }
        ),
        Ok(bed("A-iso"))
    );
    // Telemetry needed, and only the telemetry bed is left that has it.
    assert_eq!(
        place(
            &mut b,
            "U",
            "E4",
            Requirements {
                telemetry: true,
                ..Default::default()
            }
        ),
        Ok(bed("B-tele"))
    );
    // Level of care that the unit does not offer.
    assert_eq!(
        place(
            &mut b,
            "U",
            "E5",
            Requirements {
                level_of_care: Some(LevelOfCare::Icu),
                ..Default::default()
            }
        ),
        Err(BoardError::NoBedAvailable { unit: unit("U") })
    );
    assert_eq!(
        place(&mut b, "NOPE", "E6", Requirements::default()),
        Err(BoardError::UnknownUnit(unit("NOPE")))
    );
}

#[test]
fn placement_for_isolation_isolates_the_room_and_uses_the_patients_sex() {
    let iso = BedAttributes {
        isolation_capable: true,
        ..attrs(Some("R1"))
    };
    let (mut b, _) = board_with(vec![
        ("A1", "U", iso),
        ("A2", "U", attrs(Some("R1"))),
        ("B1", "U", attrs(Some("R2"))),
        ("B2", "U", attrs(Some("R2"))),
    ]);
    let got = place(
        &mut b,
        "U",
        "E1",
        Requirements {
            isolation: true,
            ..Default::default()
        },
    );
    assert_eq!(got, Ok(bed("A1")));
    assert!(
        b.bed("A1").unwrap().isolation,
        "the bed is now under isolation"
    );
    // Nobody else goes into the isolated room, though A2 is free and clean.
    assert_eq!(
        place(&mut b, "U", "E2", Requirements::default()),
        Ok(bed("B1"))
    );
    // The patient's own sex counts when the request names none: a male
    // patient is not put next to the female patient in R2.
    let released = b
        .apply(
            Command::Release {
                bed: bed("B1"),
                expected_version: None,
            },
            t(2),
        )
        .unwrap();
    // The release records which stay ended.
    assert!(
        matches!(&released[..], [EventBody::BedStateChanged { ended: Some(e), .. }] if *e == enc("E2"))
    );
    b.apply(
        Command::Housekeeping {
            bed: bed("B1"),
            to: Housekeeping::Clean,
            expected_version: None,
        },
        t(2),
    )
    .unwrap();
    let changes = b
        .apply(
            Command::Place {
                unit: unit("U"),
                encounter: enc("E3"),
                patient: Some(patient(Sex::Female)),
                requirements: Requirements::default(),
            },
            t(3),
        )
        .unwrap();
    assert!(matches!(&changes[..], [EventBody::BedStateChanged { bed: x, .. }] if *x == bed("B1")));
    let r = b.apply(
        Command::Place {
            unit: unit("U"),
            encounter: enc("E4"),
            patient: Some(patient(Sex::Male)),
            requirements: Requirements::default(),
        },
        t(4),
    );
    assert_eq!(r, Err(BoardError::NoBedAvailable { unit: unit("U") }));
}

#[test]
fn a_pending_transfer_holds_the_target_and_counts_in_and_out() {
    let (mut b, log) = board_with(vec![("A", "U", attrs(None)), ("B", "V", attrs(None))]);
    place(&mut b, "U", "E1", Requirements::default()).unwrap();
    let mut changes: Vec<EventBody> = log;
    changes.extend(
        b.apply(
            Command::ReserveTransfer {
                encounter: enc("E1"),
                to: bed("B"),
            },
            t(2),
        )
        .unwrap(),
    );
    b.check_invariants().unwrap();
    let (u, v) = (b.view().census("U").unwrap(), b.view().census("V").unwrap());
    assert_eq!((u.occupied, u.pending_out), (1, 1));
    assert_eq!((v.reserved, v.pending_in), (1, 1));
    assert_eq!(b.bed_of(&enc("E1")).unwrap().id, bed("A"));
    assert_eq!(b.transfer_of(&enc("E1")).unwrap().id, bed("B"));
    // Nobody else may take the held bed; the stay cannot hold a third.
    assert!(
        b.apply(
            Command::Assign {
                bed: bed("B"),
                encounter: enc("E2"),
                patient: None,
                expected_version: None
            },
            t(3)
        )
        .is_err()
    );
    // The transfer completes into the held bed.
    changes.extend(
        b.apply(
            Command::Transfer {
                encounter: enc("E1"),
                to: bed("B"),
                patient: None,
                allow_unclean: false,
            },
            t(4),
        )
        .unwrap(),
    );
    b.check_invariants().unwrap();
    assert_eq!(b.bed("A").unwrap().state, BedState::VacantDirty);
    assert!(b.transfer_of(&enc("E1")).is_none());
    assert_eq!(b.view().census("U").unwrap().pending_out, 0);
    // A board rebuilt from the beds (as at start-up) has the same pending transfer.
    let mut c = b.clone();
    c.apply(
        Command::Housekeeping {
            bed: bed("A"),
            to: Housekeeping::Clean,
            expected_version: None,
        },
        t(5),
    )
    .unwrap();
    c.apply(
        Command::ReserveTransfer {
            encounter: enc("E1"),
            to: bed("A"),
        },
        t(6),
    )
    .unwrap();
    let rebuilt =
        Board::from_beds(c.view().beds().map(|x| (**x).clone()).collect::<Vec<_>>()).unwrap();
    rebuilt.check_invariants().unwrap();
    assert_eq!(rebuilt.transfer_of(&enc("E1")).unwrap().id, bed("A"));
    assert_eq!(rebuilt.bed_of(&enc("E1")).unwrap().id, bed("B"));
}

#[test]
fn census_counts_every_state() {
    let (mut b, _) = board_with(
        (0..6)
            .map(|i| (["B0", "B1", "B2", "B3", "B4", "B5"][i], "U", attrs(None)))
            .collect(),
    );
    let cmds = vec![
        Command::Assign {
            bed: bed("B0"),
            encounter: enc("E0"),
            patient: None,
            expected_version: None,
        },
        Command::SetPendingDischarge {
            bed: bed("B0"),
            pending: true,
            expected_version: None,
        },
        Command::Housekeeping {
            bed: bed("B1"),
            to: Housekeeping::Dirty,
            expected_version: None,
        },
        Command::Housekeeping {
            bed: bed("B2"),
            to: Housekeeping::Dirty,
            expected_version: None,
        },
        Command::Housekeeping {
            bed: bed("B2"),
            to: Housekeeping::Cleaning,
            expected_version: None,
        },
        Command::SetIsolation {
            bed: bed("B5"),
            isolation: true,
            expected_version: None,
        },
    ];
    for c in cmds {
        b.apply(c, t(1)).unwrap();
    }
    let c = b.view().census("U").unwrap();
    expect_test::expect![[r#"
        Census {
            total: 6,
            occupied: 1,
            available: 3,
            dirty: 1,
            cleaning: 1,
            blocked: 0,
            reserved: 0,
            pending_in: 0,
            pending_out: 1,
            isolation: 1,
        }
    "#]]
    .assert_debug_eq(&c);
}

#[test]
fn reconfigure_and_decommission() {
    let (mut b, _) = board_with(vec![("B1", "U", attrs(None)), ("B2", "U", attrs(None))]);
    b.apply(
        Command::Reconfigure {
            bed: bed("B1"),
            unit: unit("V"),
            attributes: attrs(None),
        },
        t(1),
    )
    .unwrap();
    assert_eq!(b.view().unit_beds("V").unwrap().count(), 1);
    assert_eq!(b.view().unit_beds("U").unwrap().count(), 1);
    place(&mut b, "U", "E1", Requirements::default()).unwrap();
    assert!(
        b.apply(Command::Decommission { bed: bed("B2") }, t(2))
            .is_err()
    );
    b.apply(Command::Decommission { bed: bed("B1") }, t(2))
        .unwrap();
    assert!(b.bed("B1").is_none());
    assert!(b.bed_of(&enc("E1")).is_some());
    b.check_invariants().unwrap();
}

// ---- property test -------------------------------------------------------

const BEDS: [&str; 6] = ["B0", "B1", "B2", "B3", "B4", "B5"];

fn arb_command() -> impl Strategy<Value = Command> {
    let b = (0..BEDS.len()).prop_map(|i| bed(BEDS[i]));
    let e = (0..5u8).prop_map(|i| enc(&format!("E{i}")));
    let v = prop_oneof![Just(None), (1..12u64).prop_map(Some)];
    let sex = prop_oneof![Just(None), Just(Some(Sex::Female)), Just(Some(Sex::Male))];
    prop_oneof![
        (b.clone(), e.clone(), v.clone(), sex.clone()).prop_map(|(bed, encounter, v, s)| {
            Command::Assign {
                bed,
                encounter,
                patient: s.map(patient),
                expected_version: v,
            }
        }),
        (e.clone(), sex, any::<bool>(), 0..2u8).prop_map(|(encounter, s, iso, u)| {
            Command::Place {
                unit: unit(if u == 0 { "U" } else { "V" }),
                encounter,
                patient: s.map(patient),
                requirements: Requirements {
                    sex: s,
                    isolation: iso,
                    ..Default::default()
                },
            }
        }),
        (b.clone(), v.clone()).prop_map(|(bed, v)| Command::Release {
            bed,
            expected_version: v
        }),
        (b.clone(), e.clone(), v.clone()).prop_map(|(bed, encounter, v)| Command::Reserve {
            bed,
            encounter,
            patient: None,
            expected_version: v
        }),
        (b.clone(), v.clone()).prop_map(|(bed, v)| Command::CancelReservation {
            bed,
            expected_version: v
        }),
        (b.clone(), 0..3u8, v.clone()).prop_map(|(bed, h, v)| Command::Housekeeping {
            bed,
            to: [
                Housekeeping::Dirty,
                Housekeeping::Cleaning,
                Housekeeping::Clean
            ][h as usize],
            expected_version: v
        }),
        (b.clone(), v.clone()).prop_map(|(bed, v)| Command::Block {
            bed,
            reason: "maintenance".into(),
            until: None,
            expected_version: v
        }),
        (b.clone(), v.clone()).prop_map(|(bed, v)| Command::Unblock {
            bed,
            expected_version: v
        }),
        (b.clone(), any::<bool>(), v.clone()).prop_map(|(bed, isolation, v)| {
            Command::SetIsolation {
                bed,
                isolation,
                expected_version: v,
            }
        }),
        (e.clone(), b.clone())
            .prop_map(|(encounter, to)| Command::ReserveTransfer { encounter, to }),
        (e.clone(), b.clone()).prop_map(|(encounter, to)| Command::Transfer {
            encounter,
            to,
            patient: None,
            allow_unclean: false,
        }),
        (b, any::<bool>(), v).prop_map(|(bed, pending, v)| Command::SetPendingDischarge {
            bed,
            pending,
            expected_version: v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any interleaving of commands keeps every stay in at most one bed and
    /// every bed with at most one stay, and replaying the recorded changes from
    /// scratch gives exactly the live board.
    #[test]
    fn no_double_occupancy_and_replay_equals_live(cmds in prop::collection::vec(arb_command(), 1..80)) {
        let iso = BedAttributes { isolation_capable: true, ..attrs(Some("R0")) };
        let (mut live, commissions) = board_with(vec![
            ("B0", "U", iso),
            ("B1", "U", attrs(Some("R1"))),
            ("B2", "U", attrs(Some("R1"))),
            ("B3", "V", attrs(Some("R2"))),
            ("B4", "V", attrs(Some("R2"))),
            ("B5", "V", attrs(None)),
        ]);
        let mut log: Vec<(EventBody, Timestamp)> = commissions.into_iter().map(|c| (c, t(0))).collect();
        for (i, cmd) in cmds.into_iter().enumerate() {
            let at = t(i as i64 + 1);
            let before = live.clone();
            match live.apply(cmd, at) {
                Ok(changes) => log.extend(changes.into_iter().map(|c| (c, at))),
                Err(_) => prop_assert!(live == before, "a refused command changed the board"),
            }
            prop_assert_eq!(live.check_invariants(), Ok(()));
        }
        let mut replayed = Board::new();
        for (c, at) in &log {
            replayed.apply_change(c, *at).unwrap();
        }
        prop_assert!(replayed == live);
        prop_assert_eq!(replayed.check_invariants(), Ok(()));
    }
}

#[test]
fn a_published_view_keeps_its_beds_and_shares_every_chunk_a_change_did_not_touch() {
    let ids: Vec<String> = (0..200).map(|i| format!("B{i:03}")).collect();
    let (mut b, _) = board_with(
        ids.iter()
            .map(|i| (i.as_str(), "3W", attrs(None)))
            .collect(),
    );
    let before = b.view();
    assert_eq!(before.len(), 200);
    // Bed 130 sits in the third chunk of 64.
    b.apply(
        Command::SetIsolation {
            bed: bed("B130"),
            isolation: true,
            expected_version: Some(1),
        },
        t(1),
    )
    .unwrap();
    let after = b.view();
    assert!(
        !before.bed("B130").unwrap().isolation,
        "the old view is unchanged"
    );
    assert!(after.bed("B130").unwrap().isolation);
    for (i, id) in ids.iter().enumerate() {
        let (x, y) = (before.bed(id).unwrap(), after.bed(id).unwrap());
        assert_eq!(Arc::ptr_eq(x, y), id != "B130", "bed {i}");
    }
    for c in 0..4 {
        assert_eq!(
            Arc::ptr_eq(&before.beds.chunks[c], &after.beds.chunks[c]),
            c != 2,
            "chunk {c}"
        );
    }
    // In insertion order, every bed once.
    let seen: Vec<&str> = after.beds().map(|b| b.id.as_str()).collect();
    assert_eq!(seen, ids.iter().map(String::as_str).collect::<Vec<_>>());
}
