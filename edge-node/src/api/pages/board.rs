//! The unit list (`/`), the unit board (`/units/{unit}`) and its changes.
//!
//! A board shows every bed of a unit as a tile: status as text and icon
//! (never colour alone), flags (isolation, expected discharge), the patient
//! as initials for viewers and by name for nurses and up, and for nurses
//! the one-tap housekeeping and isolation changes. Each tile carries
//! `data-bed`, `data-status` (the API's status names) and `data-version`.
//!
//! `GET /units/{unit}/live` is the board's own Server-Sent Events stream:
//! on (re)connection every tile and the census (`tile`, `census`, then
//! `snapshot`), then each committed change of a bed of the unit as its
//! re-rendered tile and the new census, and a `tick` every 2 s so the page
//! can tell a quiet board from a lost stream. Tiles are rendered here, for
//! the session's role, so the page never renders a bed itself.
//!
//! A change (form post) goes through the API's commands and the writer and
//! answers `303` back to the board; a refused change (`409`: someone else
//! changed the bed first) shows the board with what was not applied and
//! the bed as it is now.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use hms_domain::BedState;
use hms_web::page;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use super::{Signed, frame, may, message, see_other};
use crate::api::beds::{StatusBody, StatusTarget, actor, bed_id, status_command, write_problem};
use crate::api::{AppState, RequestId, Segment};
use crate::auth::{Principal, Role};
use crate::board::{Bed, BoardView, Census, Command};
use crate::store::WriteRequest;

/// A status's label and icon.
pub(crate) fn status_label(state: &BedState) -> (&'static str, &'static str) {
    match state {
        BedState::VacantClean => ("Clean", "clean"),
        BedState::VacantDirty => ("Dirty", "dirty"),
        BedState::Cleaning => ("Cleaning", "cleaning"),
        BedState::Occupied { .. } => ("Occupied", "occupied"),
        BedState::Reserved { .. } => ("Reserved", "reserved"),
        BedState::Blocked { .. } => ("Blocked", "blocked"),
    }
}

/// An icon (inline SVG, hidden from assistive technology: the text beside
/// it says the same).
fn icon(name: &str) -> Markup {
    let paths: &str = match name {
        "clean" => r#"<path d="M4 12.5l5 5L20 6.5"/>"#,
        "dirty" => r#"<path d="M12 3c3 5 6 8 6 11a6 6 0 0 1-12 0c0-3 3-6 6-11z"/>"#,
        "cleaning" => r#"<path d="M20 12a8 8 0 1 1-2.4-5.7"/><path d="M20 4v5h-5"/>"#,
        "occupied" => r#"<circle cx="12" cy="8" r="4"/><path d="M4 21c0-4 4-7 8-7s8 3 8 7"/>"#,
        "reserved" => r#"<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 3"/>"#,
        "blocked" => r#"<circle cx="12" cy="12" r="9"/><path d="M5.6 5.6l12.8 12.8"/>"#,
        "isolation" => r#"<path d="M12 3l8 3v6c0 5-3.5 8-8 9-4.5-1-8-4-8-9V6z"/>"#,
        _ => r#"<path d="M4 12h11M11 6l6 6-6 6M20 4v16"/>"#,
    };
    html! {
        svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"
            stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false" {
            (PreEscaped(paths))
        }
    }
}

/// A name (`FAMILY, Given`) as initials (`G.F.`): what a wall display shows.
pub(crate) fn initials(name: &str) -> String {
    let (family, given) = name.split_once(',').unwrap_or((name, ""));
    [given, family]
        .iter()
        .filter_map(|part| part.trim().chars().next())
        .flat_map(char::to_uppercase)
        .map(|c| format!("{c}."))
        .collect()
}

/// One bed's tile, for `who`'s role.
pub(crate) fn tile(state: &AppState, bed: &Bed, who: &Principal) -> Markup {
    let (label, icon_name) = status_label(&bed.state);
    let name = bed.patient.as_ref().and_then(|p| p.name.as_ref());
    let sees = may(who, Role::Nurse);
    let since = state.settings.clock.clock_time(bed.since);
    let bed_id = bed.id.as_str();
    html! {
        li class="bed" id={ "bed-" (bed_id) } data-bed=(bed_id) data-status=(bed.state.name())
            data-version=(bed.version) data-isolation=[bed.isolation.then_some("true")]
            data-pending-discharge=[bed.pending_discharge.then_some("true")] {
            h2 class="id" {
                @if sees { a href={ "/beds/" (bed_id) } aria-label={ "Bed " (bed_id) ", details" } { (bed_id) } } @else { (bed_id) }
            }
            p class="status" { (icon(icon_name)) span { (label) } }
            @if let BedState::Blocked { reason, .. } = &bed.state {
                p class="who" { (reason) }
            }
            @if let Some(n) = name {
                p class="who" {
                    @if sees { (n.expose()) } @else { (initials(n.expose())) }
                }
            }
            p class="since" { "since " (since) }
            @if bed.isolation || bed.pending_discharge {
                ul class="flags" {
                    @if bed.isolation {
                        li class="flag isolation" { (icon("isolation")) "Isolation" }
                    }
                    @if bed.pending_discharge {
                        li class="flag" { (icon("discharge")) "Expected discharge" }
                    }
                }
            }
            @if sees {
                div class="actions" { (actions(bed)) }
            }
        }
    }
}

/// One change as a one-button form.
fn action(bed: &Bed, path: &str, field: (&str, &str), label: &str, key: &str) -> Markup {
    let id = bed.id.as_str();
    html! {
        form method="post" action={ "/beds/" (id) "/" (path) } {
            input type="hidden" name="version" value=(bed.version);
            input type="hidden" name=(field.0) value=(field.1);
            button type="submit" data-key=(key) aria-label={ (label) ", bed " (id) } { (label) }
        }
    }
}

/// The housekeeping and isolation changes a bed allows now (nurse and up).
fn actions(bed: &Bed) -> Markup {
    html! {
        @match bed.state {
            BedState::VacantDirty => {
                (action(bed, "status", ("status", "cleaning"), "Start cleaning", "cleaning"))
                (action(bed, "status", ("status", "clean"), "Mark clean", "clean"))
            },
            BedState::Cleaning => {
                (action(bed, "status", ("status", "clean"), "Mark clean", "clean"))
            },
            BedState::VacantClean => {
                (action(bed, "status", ("status", "dirty"), "Mark dirty", "dirty"))
            },
            _ => {},
        }
        @if !matches!(bed.state, BedState::Blocked { .. }) {
            @if bed.isolation {
                (action(bed, "isolation", ("isolation", "false"), "Stop isolation", "isolation"))
            } @else {
                (action(bed, "isolation", ("isolation", "true"), "Start isolation", "isolation"))
            }
        }
    }
}

/// The census line of a unit.
fn census(c: &Census) -> Markup {
    let items = [
        (c.occupied, "occupied"),
        (c.available, "available"),
        (c.dirty + c.cleaning, "to clean"),
        (c.blocked, "blocked"),
        (c.pending_in, "pending in"),
        (c.pending_out, "pending out"),
        (c.isolation, "isolation"),
    ];
    html! {
        ul class="census" id="census" aria-label="Census" data-total=(c.total) {
            li { strong { (c.total) } "beds" }
            @for (n, what) in items {
                li data-count=(what) { strong { (n) } (what) }
            }
        }
    }
}

fn unit_name<'a>(state: &'a AppState, unit: &'a str) -> &'a str {
    state
        .settings
        .units
        .iter()
        .find(|(id, _)| id.as_str() == unit)
        .map_or(unit, |(_, u)| u.name.as_str())
}

/// `GET /`: every unit with its census, each a link to its board.
pub async fn units(State(state): State<AppState>, who: Signed) -> Response {
    let view = state.store.view();
    let body = html! {
        h1 { "Units" }
        table {
            caption class="hint" { "Beds by unit, as of now. Choose a unit to open its board." }
            thead {
                tr {
                    th scope="col" { "Unit" }
                    th scope="col" { "Floor" }
                    th scope="col" class="num" { "Beds" }
                    th scope="col" class="num" { "Occupied" }
                    th scope="col" class="num" { "Available" }
                    th scope="col" class="num" { "To clean" }
                    th scope="col" class="num" { "Blocked" }
                }
            }
            tbody {
                @for u in view.unit_ids() {
                    @if let Some(c) = view.census(u.as_str()) {
                        tr data-unit=(u.as_str()) {
                            th scope="row" { a href={ "/units/" (u.as_str()) } { (unit_name(&state, u.as_str())) } }
                            td { (state.settings.units.get(u).map_or("", |i| i.floor.as_str())) }
                            td class="num" { (c.total) }
                            td class="num" { (c.occupied) }
                            td class="num" { (c.available) }
                            td class="num" { (c.dirty + c.cleaning) }
                            td class="num" { (c.blocked) }
                        }
                    }
                }
            }
        }
    };
    page::respond(frame(&state, &who, "Units", "/", "units", body))
}

/// What a board page shows above the tiles after a refused change.
#[derive(Debug)]
pub(crate) struct Refused<'a> {
    /// What was asked.
    pub(crate) what: &'a str,
    /// Why it was refused.
    pub(crate) why: String,
}

/// The stays waiting for a bed of the unit (reserved) and the expected
/// discharges, for bed managers; re-sent live with every change.
fn pending(view: &BoardView, unit: &str) -> Markup {
    let beds: Vec<_> = view.unit_beds(unit).into_iter().flatten().collect();
    let incoming: Vec<_> = beds
        .iter()
        .filter(|b| matches!(b.state, BedState::Reserved { .. }))
        .collect();
    let outgoing: Vec<_> = beds.iter().filter(|b| b.pending_discharge).collect();
    html! {
        section id="pending" class="pending" aria-labelledby="pending-title" {
            h2 id="pending-title" { "Pending" }
            div class="columns" {
                div {
                    h3 { "Admissions (" (incoming.len()) ")" }
                    @if incoming.is_empty() { p { "None." } }
                    ul {
                        @for b in &incoming {
                            li { a href={ "/beds/" (b.id.as_str()) } { (b.id.as_str()) } " — encounter " (b.state.encounter().map_or("", |e| e.as_str())) }
                        }
                    }
                }
                div {
                    h3 { "Discharges (" (outgoing.len()) ")" }
                    @if outgoing.is_empty() { p { "None." } }
                    ul {
                        @for b in &outgoing {
                            li { a href={ "/beds/" (b.id.as_str()) } { (b.id.as_str()) } " — encounter " (b.state.encounter().map_or("", |e| e.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

/// The board page of `unit`, with a refused change or a placement
/// proposal above the tiles; `None` when there is no such unit.
pub(crate) fn board_page(
    state: &AppState,
    who: &Signed,
    view: &BoardView,
    unit: &str,
    refused: Option<Refused<'_>>,
    proposal: Option<Markup>,
) -> Option<Markup> {
    let c = view.census(unit)?;
    let beds = view.unit_beds(unit)?;
    let name = unit_name(state, unit);
    let manager = may(&who.principal, Role::BedManager);
    let body = html! {
        h1 { (name) }
        @if let Some(r) = refused {
            div class="notice error" role="alert" id="refused" {
                p { strong { "Not applied: " } (r.what) }
                p { (r.why) " The board below shows the bed as it is now." }
            }
        }
        @if let Some(p) = proposal { (p) }
        (census(&c))
        @if manager {
            div class="manage" {
                (super::manage::placement_form(unit))
                (pending(view, unit))
            }
        }
        ul class="beds" id="beds" aria-label={ "Beds of " (name) } data-unit=(unit)
            data-live={ "/units/" (unit) "/live" } {
            @for b in beds {
                (tile(state, b, &who.principal))
            }
        }
    };
    Some(frame(state, who, name, "", "board", body))
}

/// `GET /units/{unit}`: the board of a unit.
pub async fn page(State(state): State<AppState>, who: Signed, Segment(unit): Segment) -> Response {
    let view = state.store.view();
    match board_page(&state, &who, &view, &unit, None, None) {
        Some(m) => page::respond(m),
        None => message(
            StatusCode::NOT_FOUND,
            "No such unit",
            "This appliance has no unit of that name.",
        ),
    }
}

fn tile_event(state: &AppState, bed: &Bed, who: &Principal) -> Event {
    Event::default().event("tile").data(
        json!({ "bed": bed.id.as_str(), "html": tile(state, bed, who).into_string() }).to_string(),
    )
}

fn census_event(view: &BoardView, unit: &str) -> Option<Event> {
    let c = view.census(unit)?;
    Some(
        Event::default()
            .event("census")
            .data(json!({ "html": census(&c).into_string() }).to_string()),
    )
}

/// The census and, for bed managers, the pending lists: what a change of
/// any bed of the unit re-renders besides the bed's tile.
fn summary_events(view: &BoardView, unit: &str, who: &Principal) -> Vec<Event> {
    let mut v: Vec<Event> = census_event(view, unit).into_iter().collect();
    if may(who, Role::BedManager) {
        v.push(
            Event::default()
                .event("census")
                .data(json!({ "html": pending(view, unit).into_string() }).to_string()),
        );
    }
    v
}

/// A `snapshot` or `tick`: the time now, and the hospital's wall clock
/// (what the stale banner quotes).
fn clock_event(state: &AppState, kind: &'static str) -> Event {
    let now = hms_domain::Timestamp::now();
    Event::default().event(kind).data(
        json!({ "at": now, "clock": state.settings.clock.clock_time_seconds(now) }).to_string(),
    )
}

/// `GET /units/{unit}/live`: the board's stream (see the module docs).
pub async fn live(
    State(state): State<AppState>,
    who: Signed,
    Segment(unit): Segment,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    // Subscribe before the snapshot: nothing committed in between is lost,
    // and what the snapshot already shows is skipped by version.
    let rx = state.store.subscribe();
    let view = state.store.view();
    let Some(beds) = view.unit_beds(&unit) else {
        return Err(message(
            StatusCode::NOT_FOUND,
            "No such unit",
            "This appliance has no unit of that name.",
        ));
    };
    let mut shown: HashMap<String, u64> = HashMap::new();
    let mut first: Vec<Event> = Vec::new();
    for b in beds {
        shown.insert(b.id.as_str().to_owned(), b.version);
        first.push(tile_event(&state, b, &who.principal));
    }
    first.extend(summary_events(&view, &unit, &who.principal));
    first.push(clock_event(&state, "snapshot"));
    let metrics = state.metrics.clone();
    let (st, principal, u) = (state.clone(), who.principal.clone(), unit.clone());
    let changes = BroadcastStream::new(rx).filter_map(move |item| {
        let out = match item {
            Ok(n) if n.bed.unit.as_str() == u => {
                let seen = shown.get(n.bed.id.as_str()).copied().unwrap_or(0);
                if n.bed.version <= seen {
                    vec![]
                } else {
                    shown.insert(n.bed.id.as_str().to_owned(), n.bed.version);
                    let mut v = vec![tile_event(&st, &n.bed, &principal)];
                    v.extend(summary_events(&st.store.view(), &u, &principal));
                    v
                }
            }
            Ok(_) => vec![],
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(missed)) => {
                // Notices were dropped: send the whole unit again.
                metrics.stream_dropped.inc_by(missed);
                let view = st.store.view();
                let mut v = Vec::new();
                for b in view.unit_beds(&u).into_iter().flatten() {
                    shown.insert(b.id.as_str().to_owned(), b.version);
                    v.push(tile_event(&st, b, &principal));
                }
                v.extend(summary_events(&view, &u, &principal));
                v
            }
        };
        std::future::ready(Some(futures_util::stream::iter(out.into_iter().map(Ok))))
    });
    let ticks = futures_util::stream::unfold(state.clone(), |state| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tick = clock_event(&state, "tick");
        Some((Ok::<Event, Infallible>(tick), state))
    });
    let live = futures_util::stream::select(changes.flatten(), ticks);
    let shutdown = state.shutdown.clone().cancelled_owned();
    let ended = state.tokens.clone().session_ended(who.session.clone());
    let end = async move {
        tokio::select! {
            () = shutdown => {}
            () = ended => {}
        }
    };
    let stream = futures_util::stream::iter(first.into_iter().map(Ok))
        .chain(live)
        .take_until(end);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A housekeeping change from a tile.
#[derive(Debug, Deserialize)]
pub struct StatusForm {
    status: StatusTarget,
    version: u64,
}

/// An isolation change from a tile.
#[derive(Debug, Deserialize)]
pub struct IsolationForm {
    isolation: bool,
    version: u64,
}

/// Commits `cmd` as `who`; `303` back to the bed's board, or the board
/// with what was refused.
pub(crate) async fn change(
    state: &AppState,
    who: &Signed,
    rid: &RequestId,
    bed: &str,
    what: &str,
    cmd: Result<Command, hms_web::Problem>,
) -> Response {
    let unit = state
        .store
        .view()
        .bed(bed)
        .map(|b| b.unit.as_str().to_owned());
    let Some(unit) = unit else {
        return message(
            StatusCode::NOT_FOUND,
            "No such bed",
            "This appliance has no bed of that name.",
        );
    };
    let caller = who.caller();
    let result = match cmd {
        Ok(cmd) => state
            .store
            .write(WriteRequest {
                cmd,
                actor: actor(&caller),
                correlation: Some(rid.0.clone()),
                occurred_at: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| write_problem(state, e, false)),
        Err(p) => Err(p),
    };
    match result {
        Ok(()) => see_other(&format!("/units/{unit}#bed-{bed}")),
        Err(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::CONFLICT);
            let view = state.store.view();
            let refused = Refused {
                what,
                why: format!("{}.", p.title),
            };
            match board_page(state, who, &view, &unit, Some(refused), None) {
                Some(m) => page::respond_with(status, m),
                None => message(status, p.title, &p.detail),
            }
        }
    }
}

/// `POST /beds/{bed}/status` (form: `status`, `version`).
pub async fn set_status(
    State(state): State<AppState>,
    who: Signed,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Form(form): Form<StatusForm>,
) -> Response {
    let what = match form.status {
        StatusTarget::Cleaning => "start cleaning",
        StatusTarget::Clean => "mark clean",
        StatusTarget::Dirty => "mark dirty",
        StatusTarget::Blocked => "block",
        StatusTarget::InService => "return to service",
    };
    let what = format!("{what}, bed {bed}");
    let cmd = bed_id(&bed).and_then(|id| {
        status_command(
            &state,
            &who.caller(),
            id,
            StatusBody {
                status: form.status,
                reason: None,
                until: None,
                version: form.version,
            },
        )
    });
    change(&state, &who, &rid, &bed, &what, cmd).await
}

/// `POST /beds/{bed}/isolation` (form: `isolation` true/false, `version`).
pub async fn set_isolation(
    State(state): State<AppState>,
    who: Signed,
    Extension(rid): Extension<RequestId>,
    Segment(bed): Segment,
    Form(form): Form<IsolationForm>,
) -> Response {
    let what = if form.isolation {
        "start isolation"
    } else {
        "stop isolation"
    };
    let what = format!("{what}, bed {bed}");
    let caller = who.caller();
    let cmd = caller
        .require(Role::Nurse, &state.metrics, "change isolation")
        .and_then(|()| bed_id(&bed))
        .map(|id| Command::SetIsolation {
            bed: id,
            isolation: form.isolation,
            expected_version: Some(form.version),
        });
    change(&state, &who, &rid, &bed, &what, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_of_family_given_names() {
        assert_eq!(initials("SMITH, John"), "J.S.");
        assert_eq!(initials("Nakamura"), "N.");
        assert_eq!(initials("  , ana"), "A.");
        assert_eq!(initials("öz, ébé"), "É.Ö.");
    }
}
