//! Bed management on the pages (bed managers; nurses for expected
//! discharges): a bed's own page (`/beds/{bed}`) with its recent history
//! and every change its state allows, and placement from the unit board
//! (`POST /units/{unit}/propose`): the request (encounter, sex, isolation)
//! is answered with the bed the appliance would choose, which the bed
//! manager then assigns, or not.
//!
//! Each change is a form posted to `/beds/{bed}/{assign|reserve|release|
//! unreserve|block|in-service|pending-discharge}` and goes through the
//! API's commands, role checks and writer (the shared `change` of the board
//! module: `303` back to the board, or the board with what was refused).

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use hms_domain::{BedState, EncounterId, Sex, UnitId};
use hms_web::page;
use maud::{Markup, html};
use serde::Deserialize;

use super::board::{Refused, board_page, change, status_label};
use super::{Signed, frame, may, message};
use crate::api::beds::bed_id;
use crate::api::{AppState, RequestId, Segment};
use crate::auth::Role;
use crate::board::{Bed, Command, Requirements};

/// The fields of every bed form (each uses some).
#[derive(Debug, Default, Deserialize)]
pub struct BedForm {
    version: u64,
    #[serde(default)]
    encounter: String,
    #[serde(default)]
    mrn: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    sex: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    pending: Option<bool>,
}

fn sex(s: &str) -> Option<Sex> {
    match s {
        "female" => Some(Sex::Female),
        "male" => Some(Sex::Male),
        "other" => Some(Sex::Other),
        _ => None,
    }
}

fn sex_select(id: &str) -> Markup {
    html! {
        label for=(id) { "Sex" }
        select id=(id) name="sex" {
            option value="" { "not given" }
            option value="female" { "female" }
            option value="male" { "male" }
            option value="other" { "other" }
        }
    }
}

/// The encounter (and, if given, the patient) of an assignment or reservation.
fn stay(f: &BedForm) -> Result<(EncounterId, Option<hms_domain::PatientRef>), hms_web::Problem> {
    let encounter = EncounterId::new(f.encounter.trim()).map_err(|_| {
        hms_web::Problem::invalid("the encounter (visit number) is missing or not valid")
    })?;
    let patient = (!f.mrn.trim().is_empty()).then(|| hms_domain::PatientRef {
        mrn: hms_domain::Mrn::new(f.mrn.trim()),
        name: (!f.name.trim().is_empty()).then(|| hms_domain::PersonName::new(f.name.trim())),
        birth_date: None,
        sex: sex(&f.sex),
    });
    Ok((encounter, patient))
}

/// What a form post to `/beds/{bed}/{action}` asks for.
fn command(
    who: &Signed,
    state: &AppState,
    bed: &str,
    action: &str,
    f: &BedForm,
) -> Result<Command, hms_web::Problem> {
    let c = who.caller();
    let v = Some(f.version);
    let id = bed_id(bed)?;
    match action {
        "assign" | "reserve" => {
            c.require(
                Role::BedManager,
                &state.metrics,
                if action == "assign" {
                    "assign beds"
                } else {
                    "reserve beds"
                },
            )?;
            let (encounter, patient) = stay(f)?;
            Ok(if action == "assign" {
                Command::Assign {
                    bed: id,
                    encounter,
                    patient,
                    expected_version: v,
                }
            } else {
                Command::Reserve {
                    bed: id,
                    encounter,
                    patient,
                    expected_version: v,
                }
            })
        }
        "release" => {
            c.require(Role::BedManager, &state.metrics, "release beds")?;
            Ok(Command::Release {
                bed: id,
                expected_version: v,
            })
        }
        "unreserve" => {
            c.require(Role::BedManager, &state.metrics, "cancel reservations")?;
            Ok(Command::CancelReservation {
                bed: id,
                expected_version: v,
            })
        }
        "block" => {
            c.require(Role::BedManager, &state.metrics, "block beds")?;
            let reason = f.reason.trim();
            if reason.is_empty() || reason.chars().count() > 200 {
                return Err(hms_web::Problem::invalid(
                    "blocking a bed needs a reason of 1 to 200 characters",
                ));
            }
            Ok(Command::Block {
                bed: id,
                reason: reason.to_owned(),
                until: None,
                expected_version: v,
            })
        }
        "in-service" => {
            c.require(Role::BedManager, &state.metrics, "unblock beds")?;
            Ok(Command::Unblock {
                bed: id,
                expected_version: v,
            })
        }
        _ => {
            c.require(Role::Nurse, &state.metrics, "change expected discharges")?;
            Ok(Command::SetPendingDischarge {
                bed: id,
                pending: f.pending.unwrap_or(true),
                expected_version: v,
            })
        }
    }
}

/// Handles `POST /beds/{bed}/{action}`.
async fn post(
    state: AppState,
    who: Signed,
    rid: RequestId,
    bed: String,
    action: &'static str,
    f: BedForm,
) -> Response {
    let what = match action {
        "assign" => format!("assign encounter {}, bed {bed}", f.encounter.trim()),
        "reserve" => format!("reserve for encounter {}, bed {bed}", f.encounter.trim()),
        "release" => format!("release, bed {bed}"),
        "unreserve" => format!("cancel the reservation, bed {bed}"),
        "block" => format!("block, bed {bed}"),
        "in-service" => format!("return to service, bed {bed}"),
        _ => format!("expected discharge, bed {bed}"),
    };
    let cmd = command(&who, &state, &bed, action, &f);
    change(&state, &who, &rid, &bed, &what, cmd).await
}

macro_rules! bed_action {
    ($name:ident, $action:literal) => {
        #[doc = concat!("`POST /beds/{bed}/", $action, "`.")]
        pub async fn $name(
            State(state): State<AppState>,
            who: Signed,
            Extension(rid): Extension<RequestId>,
            Segment(bed): Segment,
            Form(f): Form<BedForm>,
        ) -> Response {
            post(state, who, rid, bed, $action, f).await
        }
    };
}

bed_action!(assign, "assign");
bed_action!(reserve, "reserve");
bed_action!(release, "release");
bed_action!(unreserve, "unreserve");
bed_action!(block, "block");
bed_action!(in_service, "in-service");
bed_action!(pending_discharge, "pending-discharge");

fn version_form(bed: &Bed, action: &str, label: &str) -> Markup {
    html! {
        form method="post" action={ "/beds/" (bed.id.as_str()) "/" (action) } {
            input type="hidden" name="version" value=(bed.version);
            button type="submit" { (label) }
        }
    }
}

fn stay_form(bed: &Bed, action: &str, label: &str) -> Markup {
    let id = |f: &str| format!("{action}-{f}");
    html! {
        form method="post" action={ "/beds/" (bed.id.as_str()) "/" (action) } class="stay" {
            fieldset {
                legend { (label) }
                input type="hidden" name="version" value=(bed.version);
                label for=(id("encounter")) { "Encounter (visit number)" }
                input id=(id("encounter")) name="encounter" type="text" autocomplete="off" required;
                label for=(id("mrn")) { "MRN (optional)" }
                input id=(id("mrn")) name="mrn" type="text" autocomplete="off";
                label for=(id("name")) { "Name (optional, FAMILY, Given)" }
                input id=(id("name")) name="name" type="text" autocomplete="off";
                (sex_select(&id("sex")))
                p { button class="primary" type="submit" { (label) } }
            }
        }
    }
}

/// The changes a bed allows now, for `who`.
fn bed_actions(who: &Signed, bed: &Bed) -> Markup {
    let manager = may(&who.principal, Role::BedManager);
    html! {
        @if manager {
            @match &bed.state {
                BedState::VacantClean => {
                    (stay_form(bed, "assign", "Assign"))
                    (stay_form(bed, "reserve", "Reserve"))
                },
                BedState::Reserved { .. } => {
                    (stay_form(bed, "assign", "Admit the reserved stay"))
                    (version_form(bed, "unreserve", "Cancel the reservation"))
                },
                BedState::Occupied { .. } => {
                    (version_form(bed, "release", "Release (discharge or transfer out)"))
                },
                BedState::Blocked { .. } => {
                    (version_form(bed, "in-service", "Back in service"))
                },
                _ => {},
            }
            @if matches!(bed.state, BedState::VacantClean | BedState::VacantDirty | BedState::Cleaning) {
                form method="post" action={ "/beds/" (bed.id.as_str()) "/block" } {
                    fieldset {
                        legend { "Block" }
                        input type="hidden" name="version" value=(bed.version);
                        label for="block-reason" { "Reason (maintenance, staffing, infection control…)" }
                        input id="block-reason" name="reason" type="text" maxlength="200" required;
                        p { button type="submit" { "Block" } }
                    }
                }
            }
        }
        @if matches!(bed.state, BedState::Occupied { .. }) && may(&who.principal, Role::Nurse) {
            form method="post" action={ "/beds/" (bed.id.as_str()) "/pending-discharge" } {
                input type="hidden" name="version" value=(bed.version);
                input type="hidden" name="pending" value=(if bed.pending_discharge { "false" } else { "true" });
                button type="submit" {
                    @if bed.pending_discharge { "Discharge no longer expected" } @else { "Expect discharge" }
                }
            }
        }
    }
}

/// `GET /beds/{bed}`: one bed, its recent history, its changes (nurse and up).
pub async fn bed_page(
    State(state): State<AppState>,
    who: Signed,
    Segment(bed): Segment,
) -> Response {
    if !may(&who.principal, Role::Nurse) {
        return message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "A bed's own page needs the nurse role or above.",
        );
    }
    let view = state.store.view();
    let Some(b) = view.bed(&bed).cloned() else {
        return message(
            StatusCode::NOT_FOUND,
            "No such bed",
            "This appliance has no bed of that name.",
        );
    };
    let history = state.store.history(&bed);
    let (label, _) = status_label(&b.state);
    let clock = &state.settings.clock;
    let unit = b.unit.as_str();
    let body = html! {
        p { a href={ "/units/" (unit) } { "← Board of " (unit) } }
        h1 { "Bed " (b.id.as_str()) }
        dl class="details" id="bed" data-bed=(b.id.as_str()) data-status=(b.state.name()) data-version=(b.version) {
            dt { "Status" } dd { (label) }
            dt { "Since" } dd { (clock.clock_time(b.since)) }
            @if let BedState::Blocked { reason, .. } = &b.state { dt { "Reason" } dd { (reason) } }
            @if let Some(e) = b.state.encounter() { dt { "Encounter" } dd { (e.as_str()) } }
            @if let Some(p) = &b.patient {
                dt { "Patient" } dd { (p.name.as_ref().map_or("—", |n| n.expose())) }
                dt { "MRN" } dd { (p.mrn.expose()) }
            }
            dt { "Isolation" } dd { (if b.isolation { "yes" } else { "no" }) }
            dt { "Expected discharge" } dd { (if b.pending_discharge { "yes" } else { "no" }) }
        }
        h2 { "Changes" }
        (bed_actions(&who, &b))
        h2 id="history" { "Recent history" }
        table aria-labelledby="history" {
            thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "State after" } th scope="col" { "By" } } }
            tbody {
                @for h in &history {
                    tr {
                        td { (clock.clock_time(h.recorded_at)) }
                        td { (h.kind) }
                        td { (h.state.unwrap_or("—")) }
                        td { (h.actor) }
                    }
                }
            }
        }
    };
    let title = format!("Bed {}", b.id.as_str());
    page::respond(frame(&state, &who, &title, "", "bed", body))
}

/// The placement request form of a unit board (bed managers).
pub(crate) fn placement_form(unit: &str) -> Markup {
    html! {
        form method="post" action={ "/units/" (unit) "/propose" } class="placement" {
            fieldset {
                legend { "Find a bed" }
                label for="place-encounter" { "Encounter (visit number)" }
                input id="place-encounter" name="encounter" type="text" autocomplete="off" required;
                (sex_select("place-sex"))
                label class="check" {
                    input type="checkbox" name="isolation" value="true";
                    " Needs isolation"
                }
                p { button class="primary" type="submit" { "Propose a bed" } }
            }
        }
    }
}

/// The placement request.
#[derive(Debug, Deserialize)]
pub struct ProposeForm {
    encounter: String,
    #[serde(default)]
    sex: String,
    #[serde(default)]
    isolation: Option<bool>,
}

/// `POST /units/{unit}/propose`: the board with the bed the appliance
/// would choose and a button to assign it.
pub async fn propose(
    State(state): State<AppState>,
    who: Signed,
    Segment(unit): Segment,
    Form(f): Form<ProposeForm>,
) -> Response {
    if !may(&who.principal, Role::BedManager) {
        return message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Placing patients needs the bed manager role.",
        );
    }
    let view = state.store.view();
    let Ok(unit_id) = UnitId::new(unit.as_str()) else {
        return message(
            StatusCode::NOT_FOUND,
            "No such unit",
            "This appliance has no unit of that name.",
        );
    };
    let req = Requirements {
        sex: sex(&f.sex),
        isolation: f.isolation.unwrap_or(false),
        ..Requirements::default()
    };
    let encounter = f.encounter.trim().to_owned();
    let proposal = match view.propose(&unit_id, &req) {
        Ok(bed) => html! {
            div class="notice" id="proposal" data-proposed=(bed.id.as_str()) {
                p { strong { "Proposed: bed " (bed.id.as_str()) } " for encounter " (encounter) "." }
                form method="post" action={ "/beds/" (bed.id.as_str()) "/assign" } {
                    input type="hidden" name="version" value=(bed.version);
                    input type="hidden" name="encounter" value=(encounter);
                    input type="hidden" name="sex" value=(f.sex);
                    button class="primary" type="submit" { "Assign bed " (bed.id.as_str()) }
                }
            }
        },
        Err(e) => html! {
            div class="notice error" id="proposal" role="alert" {
                p { strong { "No bed to propose: " } (e.to_string()) }
            }
        },
    };
    match board_page(
        &state,
        &who,
        &view,
        &unit,
        None::<Refused<'_>>,
        Some(proposal),
    ) {
        Some(m) => page::respond(m),
        None => message(
            StatusCode::NOT_FOUND,
            "No such unit",
            "This appliance has no unit of that name.",
        ),
    }
}
