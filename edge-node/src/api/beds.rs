//! Units, beds and bed mutations.
//!
//! Mutations name the bed `version` the caller saw; a stale version is a 409
//! carrying the current bed. Patient details appear only for roles from
//! `nurse` up (minimum necessary for unit kiosks).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hms_domain::{
    Actor, ActorKind, BedAttributes, BedId, BedState, EncounterId, Housekeeping, PatientRef,
    Timestamp, UnitId,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppState, Caller, RequestId, Segment};
use crate::auth::Role;
use crate::board::{Bed, BoardError, Census, Command, Requirements};
use crate::store::{WriteError, WriteRequest};
use hms_web::problem::Problem;

/// A JSON body whose rejections are problem documents.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(Problem::from(e as JsonRejection)),
        }
    }
}

/// A bed as the API shows it.
#[derive(Debug, Serialize)]
pub struct BedJson<'a> {
    id: &'a BedId,
    unit: &'a UnitId,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(flatten)]
    state: &'a BedState,
    isolation: bool,
    pending_discharge: bool,
    version: u64,
    since: Timestamp,
    attributes: &'a BedAttributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<&'a PatientRef>,
}

impl<'a> BedJson<'a> {
    /// The API form of a bed; the patient only when `with_patient`.
    pub fn new(b: &'a Bed, with_patient: bool) -> Self {
        BedJson {
            id: &b.id,
            unit: &b.unit,
            room: b.attributes.room.as_ref().map(|r| r.as_str()),
            state: &b.state,
            isolation: b.isolation,
            pending_discharge: b.pending_discharge,
            version: b.version,
            since: b.since,
            attributes: &b.attributes,
            patient: if with_patient {
                b.patient.as_ref()
            } else {
                None
            },
        }
    }
}

pub(crate) fn sees_patients(c: &Caller) -> bool {
    c.0.role >= Role::Nurse
}

#[derive(Serialize)]
struct UnitJson<'a> {
    id: &'a UnitId,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level_of_care: Option<&'static str>,
    census: Census,
}

fn unit_json<'a>(state: &'a AppState, id: &'a UnitId, census: Census) -> UnitJson<'a> {
    let info = state.settings.units.get(id);
    UnitJson {
        id,
        name: info.map_or(id.as_str(), |u| u.name.as_str()),
        floor: info.map(|u| u.floor.as_str()),
        level_of_care: info.map(|u| u.level_of_care.as_str()),
        census,
    }
}

/// `GET /api/v1/units`: every unit with its census.
pub async fn list_units(State(state): State<AppState>, _c: Caller) -> Response {
    let view = state.store.view();
    let units: Vec<_> = view
        .unit_ids()
        .filter_map(|u| view.census(u.as_str()).map(|c| unit_json(&state, u, c)))
        .collect();
    #[derive(Serialize)]
    struct Units<'a> {
        units: Vec<UnitJson<'a>>,
    }
    Json(Units { units }).into_response()
}

/// `GET /api/v1/units/{unit}`: one unit with its census.
pub async fn get_unit(
    State(state): State<AppState>,
    _c: Caller,
    Segment(unit): Segment,
) -> Result<Response, Problem> {
    let view = state.store.view();
    let census = view
        .census(&unit)
        .ok_or_else(|| Problem::not_found("unit", &unit))?;
    let id = view
        .unit_ids()
        .find(|u| u.as_str() == unit)
        .ok_or_else(|| Problem::not_found("unit", &unit))?;
    Ok(Json(unit_json(&state, id, census)).into_response())
}

/// `GET /api/v1/units/{unit}/beds`: the beds of a unit, in bed id order.
pub async fn unit_beds(
    State(state): State<AppState>,
    c: Caller,
    Segment(unit): Segment,
) -> Result<Response, Problem> {
    let view = state.store.view();
    let with_patient = sees_patients(&c);
    let beds: Vec<_> = view
        .unit_beds(&unit)
        .ok_or_else(|| Problem::not_found("unit", &unit))?
        .map(|b| BedJson::new(b, with_patient))
        .collect();
    #[derive(Serialize)]
    struct UnitBeds<'a> {
        unit: &'a str,
        beds: Vec<BedJson<'a>>,
    }
    // Serialized straight from the board view: no intermediate JSON tree.
    Ok(Json(UnitBeds { unit: &unit, beds }).into_response())
}

/// `GET /api/v1/beds/{bed}`: one bed and its recent history.
pub async fn get_bed(
    State(state): State<AppState>,
    c: Caller,
    Segment(bed): Segment,
) -> Result<Response, Problem> {
    let view = state.store.view();
    let b = view
        .bed(&bed)
        .cloned()
        .ok_or_else(|| Problem::not_found("bed", &bed))?;
    let history = state.store.history(&bed);
    #[derive(Serialize)]
    struct BedWithHistory<'a> {
        bed: BedJson<'a>,
        history: Vec<crate::store::HistoryItem>,
    }
    Ok(Json(BedWithHistory {
        bed: BedJson::new(&b, sees_patients(&c)),
        history,
    })
    .into_response())
}

pub(crate) fn actor(c: &Caller) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: c.0.name.clone(),
    }
}

/// Sends a command through the writer and shapes the answer.
async fn submit(
    state: &AppState,
    caller: &Caller,
    rid: &RequestId,
    cmd: Command,
    created: bool,
) -> Result<Response, Problem> {
    let req = WriteRequest {
        cmd,
        actor: actor(caller),
        correlation: Some(rid.0.clone()),
        occurred_at: None,
    };
    let with_patient = sees_patients(caller);
    let target = req.cmd.bed().cloned();
    match state.store.write(req).await {
        Ok(c) => {
            let seq = c.events.last().map(|(s, _)| *s);
            let bed = c.beds.last().cloned();
            // Nothing changed (e.g. isolation already set): answer with the bed as is.
            let bed = bed
                .or_else(|| target.and_then(|t| state.store.view().bed(t.as_str()).cloned()))
                .ok_or_else(|| Problem::unavailable("the bed is no longer on the board"))?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(json!({ "seq": seq, "bed": BedJson::new(&bed, with_patient) })),
            )
                .into_response())
        }
        Err(e) => Err(write_problem(state, e, with_patient)),
    }
}

pub(crate) fn write_problem(state: &AppState, e: WriteError, with_patient: bool) -> Problem {
    let current = |bed: Option<&BedId>| -> Option<Arc<Bed>> {
        bed.and_then(|b| state.store.view().bed(b.as_str()).cloned())
    };
    match e {
        WriteError::Rejected(err) => {
            let detail = err.to_string();
            let cur = current(err.bed());
            let p = match &err {
                BoardError::UnknownBed(b) => return Problem::not_found("bed", b.as_str()),
                BoardError::UnknownUnit(u) => return Problem::not_found("unit", u.as_str()),
                BoardError::StaleVersion { .. } => Problem::new(
                    StatusCode::CONFLICT,
                    "stale-version",
                    "The bed changed since you saw it",
                    detail,
                ),
                BoardError::InvalidTransition { .. } => Problem::new(
                    StatusCode::CONFLICT,
                    "invalid-transition",
                    "Not allowed in the bed's current state",
                    detail,
                ),
                BoardError::EncounterAlreadyPlaced { .. } => Problem::new(
                    StatusCode::CONFLICT,
                    "encounter-already-placed",
                    "The encounter already holds a bed",
                    detail,
                ),
                BoardError::NoBedAvailable { .. } => Problem::new(
                    StatusCode::CONFLICT,
                    "no-bed-available",
                    "No bed available",
                    detail,
                ),
                BoardError::EncounterNotPlaced(_)
                | BoardError::DuplicateBed(_)
                | BoardError::Inconsistent(_) => {
                    Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
                }
            };
            match cur {
                Some(b) => p.with("current", BedJson::new(&b, with_patient)),
                None => p,
            }
        }
        WriteError::Unavailable(_) => {
            Problem::unavailable("the store could not commit the change; nothing was changed")
        }
        WriteError::Busy => {
            Problem::unavailable("the store is busy; nothing was changed, retry shortly")
        }
        WriteError::Closed => Problem::unavailable("the appliance is shutting down"),
    }
}

pub(crate) fn bed_id(s: &str) -> Result<BedId, Problem> {
    BedId::new(s).map_err(|_| Problem::not_found("bed", s))
}

/// The common shape of a bed mutation: role check, command, commit, answer.
async fn mutate_bed(
    state: &AppState,
    c: &Caller,
    rid: &RequestId,
    bed: &str,
    (min, action): (Role, &str),
    cmd: impl FnOnce(BedId) -> Command,
) -> Result<Response, Problem> {
    c.require(min, &state.metrics, action)?;
    let cmd = cmd(bed_id(bed)?);
    submit(state, c, rid, cmd, false).await
}

/// Body of a status change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub(crate) status: StatusTarget,
    #[serde(default)]
    pub(crate) reason: Option<String>,
    #[serde(default)]
    pub(crate) until: Option<Timestamp>,
    pub(crate) version: u64,
}

/// The status a change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusTarget {
    /// Vacant, waiting for housekeeping.
    Dirty,
    /// Housekeeping in progress.
    Cleaning,
    /// Vacant and clean.
    Clean,
    /// Out of service (needs a reason).
    Blocked,
    /// Back in service.
    InService,
}

/// The command of a status change, once the caller's role allows it (the
/// API and the pages share it).
pub(crate) fn status_command(
    state: &AppState,
    c: &Caller,
    bed: BedId,
    body: StatusBody,
) -> Result<Command, Problem> {
    let v = Some(body.version);
    Ok(match body.status {
        StatusTarget::Dirty | StatusTarget::Cleaning | StatusTarget::Clean => {
            c.require(Role::Nurse, &state.metrics, "change housekeeping status")?;
            let to = match body.status {
                StatusTarget::Dirty => Housekeeping::Dirty,
                StatusTarget::Cleaning => Housekeeping::Cleaning,
                _ => Housekeeping::Clean,
            };
            Command::Housekeeping {
                bed,
                to,
                expected_version: v,
            }
        }
        StatusTarget::Blocked => {
            c.require(Role::BedManager, &state.metrics, "block beds")?;
            let reason = body
                .reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Problem::invalid("blocking a bed needs a `reason`"))?;
            if reason.chars().count() > 200 {
                return Err(Problem::invalid("`reason` is limited to 200 characters"));
            }
            Command::Block {
                bed,
                reason,
                until: body.until,
                expected_version: v,
            }
        }
        StatusTarget::InService => {
            c.require(Role::BedManager, &state.metrics, "unblock beds")?;
            Command::Unblock {
                bed,
                expected_version: v,
            }
        }
    })
}

/// `POST /api/v1/beds/{bed}/status`: housekeeping, block, back in service.
pub async fn set_status(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<StatusBody>,
) -> Result<Response, Problem> {
    let cmd = status_command(&state, &c, bed_id(&bed)?, body)?;
    submit(&state, &c, &rid, cmd, false).await
}

/// A patient as a request names one: the same fields as the stored
/// [`PatientRef`], but unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    mrn: hms_domain::Mrn,
    #[serde(default)]
    name: Option<hms_domain::PersonName>,
    #[serde(default)]
    birth_date: Option<hms_domain::BirthDate>,
    #[serde(default)]
    sex: Option<hms_domain::Sex>,
}

impl From<PatientBody> for PatientRef {
    fn from(p: PatientBody) -> Self {
        PatientRef {
            mrn: p.mrn,
            name: p.name,
            birth_date: p.birth_date,
            sex: p.sex,
        }
    }
}

/// Body of an assignment or reservation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StayBody {
    encounter: EncounterId,
    #[serde(default)]
    patient: Option<PatientBody>,
    version: u64,
}

/// `POST /api/v1/beds/{bed}/assign`.
pub async fn assign(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<StayBody>,
) -> Result<Response, Problem> {
    mutate_bed(
        &state,
        &c,
        &rid,
        &bed,
        (Role::BedManager, "assign beds"),
        |bed| Command::Assign {
            bed,
            encounter: body.encounter,
            patient: body.patient.map(Into::into),
            expected_version: Some(body.version),
        },
    )
    .await
}

/// `POST /api/v1/beds/{bed}/reserve`.
pub async fn reserve(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<StayBody>,
) -> Result<Response, Problem> {
    mutate_bed(
        &state,
        &c,
        &rid,
        &bed,
        (Role::BedManager, "reserve beds"),
        |bed| Command::Reserve {
            bed,
            encounter: body.encounter,
            patient: body.patient.map(Into::into),
            expected_version: Some(body.version),
        },
    )
    .await
}

/// Body carrying only the version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    version: u64,
}

/// `POST /api/v1/beds/{bed}/release`.
pub async fn release(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<VersionBody>,
) -> Result<Response, Problem> {
    mutate_bed(
        &state,
        &c,
        &rid,
        &bed,
        (Role::BedManager, "release beds"),
        |bed| Command::Release {
            bed,
            expected_version: Some(body.version),
        },
    )
    .await
}

/// `POST /api/v1/beds/{bed}/unreserve`.
pub async fn unreserve(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<VersionBody>,
) -> Result<Response, Problem> {
    let role = (Role::BedManager, "cancel reservations");
    mutate_bed(&state, &c, &rid, &bed, role, |bed| {
        Command::CancelReservation {
            bed,
            expected_version: Some(body.version),
        }
    })
    .await
}

/// Body of an isolation change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationBody {
    isolation: bool,
    version: u64,
}

/// `POST /api/v1/beds/{bed}/isolation`.
pub async fn set_isolation(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<IsolationBody>,
) -> Result<Response, Problem> {
    mutate_bed(
        &state,
        &c,
        &rid,
        &bed,
        (Role::Nurse, "change isolation"),
        |bed| Command::SetIsolation {
            bed,
            isolation: body.isolation,
            expected_version: Some(body.version),
        },
    )
    .await
}

/// Body of an expected-discharge change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingBody {
    pending: bool,
    version: u64,
}

/// `POST /api/v1/beds/{bed}/pending-discharge`.
pub async fn set_pending_discharge(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Body(body): Body<PendingBody>,
) -> Result<Response, Problem> {
    let role = (Role::Nurse, "change expected discharges");
    mutate_bed(&state, &c, &rid, &bed, role, |bed| {
        Command::SetPendingDischarge {
            bed,
            pending: body.pending,
            expected_version: Some(body.version),
        }
    })
    .await
}

/// Body of a placement request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    encounter: EncounterId,
    #[serde(default)]
    patient: Option<PatientBody>,
    #[serde(default)]
    requirements: Requirements,
}

/// `POST /api/v1/units/{unit}/placements`: the appliance picks the best free bed.
pub async fn place(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    Segment(unit): Segment,
    Body(body): Body<PlacementBody>,
) -> Result<Response, Problem> {
    c.require(Role::BedManager, &state.metrics, "place patients")?;
    let unit = UnitId::new(unit.as_str()).map_err(|_| Problem::not_found("unit", &unit))?;
    let cmd = Command::Place {
        unit,
        encounter: body.encounter,
        patient: body.patient.map(Into::into),
        requirements: body.requirements,
    };
    submit(&state, &c, &rid, cmd, true).await
}
