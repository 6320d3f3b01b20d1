//! `/patients`: patient look-up for nurses and up, by MRN or by name and
//! birth date, showing the minimum necessary fields (MRN, name, birth date,
//! sex, EID) and, when the patient holds a bed, where.
//!
//! The search is a form **posted** to `/patients`, so no patient's name or
//! birth date lands in a URL, a browser history or a proxy's log. It runs
//! the API's look-up (the same ranking, limits and audit event:
//! `audit.patients_searched`, who and how, never the values).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use hms_web::page;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Signed, frame, may, message};
use crate::api::patients::lookup;
use crate::api::{AppState, RequestId};
use crate::auth::Role;

/// The look-up form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct LookupForm {
    #[serde(default)]
    mrn: String,
    #[serde(default)]
    family_name: String,
    #[serde(default)]
    given_name: String,
    #[serde(default)]
    birth_date: String,
}

fn form(f: &LookupForm) -> Markup {
    html! {
        form method="post" action="/patients" class="lookup" {
            fieldset {
                legend { "By medical record number" }
                label for="mrn" { "MRN" }
                input id="mrn" name="mrn" type="text" autocomplete="off" spellcheck="false" value=(f.mrn);
            }
            fieldset {
                legend { "Or by name and birth date" }
                label for="family_name" { "Family name" }
                input id="family_name" name="family_name" type="text" autocomplete="off" value=(f.family_name);
                label for="given_name" { "Given name" }
                input id="given_name" name="given_name" type="text" autocomplete="off" value=(f.given_name);
                label for="birth_date" { "Birth date" }
                input id="birth_date" name="birth_date" type="date" value=(f.birth_date);
            }
            p { button class="primary" type="submit" { "Look up" } }
        }
    }
}

fn refuse_viewer(who: &Signed) -> Option<Response> {
    (!may(&who.principal, Role::Nurse)).then(|| {
        message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Looking up patients needs the nurse role or above.",
        )
    })
}

/// `GET /patients`: the empty form.
pub async fn page(State(state): State<AppState>, who: Signed) -> Response {
    if let Some(r) = refuse_viewer(&who) {
        return r;
    }
    let body = html! {
        h1 { "Patient look-up" }
        (form(&LookupForm::default()))
    };
    page::respond(frame(
        &state,
        &who,
        "Patient look-up",
        "/patients",
        "patients",
        body,
    ))
}

/// `POST /patients`: the form again with the patients found.
pub async fn search(
    State(state): State<AppState>,
    who: Signed,
    Extension(rid): Extension<RequestId>,
    Form(f): Form<LookupForm>,
) -> Response {
    if let Some(r) = refuse_viewer(&who) {
        return r;
    }
    let mut q = HashMap::new();
    if !f.mrn.trim().is_empty() {
        q.insert("mrn".to_owned(), f.mrn.clone());
    } else {
        for (k, v) in [
            ("family_name", &f.family_name),
            ("given_name", &f.given_name),
            ("birth_date", &f.birth_date),
        ] {
            if !v.trim().is_empty() {
                q.insert(k.to_owned(), v.clone());
            }
        }
    }
    let found = lookup(&state, &who.caller(), &rid, &q).await;
    let view = state.store.view();
    // Where each patient found lies now (the board knows by MRN).
    let beds: HashMap<&str, &str> = view
        .beds()
        .filter_map(|b| Some((b.patient.as_ref()?.mrn.expose(), b.id.as_str())))
        .collect();
    let (status, results) = match &found {
        Ok(found) => {
            let patients = found.patients();
            (
                StatusCode::OK,
                html! {
                    h2 id="results" { (patients.len()) " found" }
                    @if patients.is_empty() {
                        p { "No patient matches. Check the spelling, or search by MRN." }
                    } @else {
                        table aria-labelledby="results" {
                            thead {
                                tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "MRN" }
                                    th scope="col" { "Birth date" }
                                    th scope="col" { "Sex" }
                                    th scope="col" { "Bed" }
                                    th scope="col" { "EID" }
                                }
                            }
                            tbody {
                                @for p in &patients {
                                    tr data-mrn=(p.mrn) {
                                        th scope="row" { (p.name.as_deref().unwrap_or("—")) }
                                        td { (p.mrn) }
                                        td { (p.birth_date.as_deref().unwrap_or("—")) }
                                        td { (p.sex.map_or("—", |s| match s {
                                            hms_domain::phi::Sex::Female => "female",
                                            hms_domain::phi::Sex::Male => "male",
                                            hms_domain::phi::Sex::Other => "other",
                                        })) }
                                        td {
                                            @match beds.get(p.mrn.as_str()) {
                                                Some(bed) => {
                                                    @let unit = view.bed(bed).map(|b| b.unit.as_str()).unwrap_or("");
                                                    a href={ "/units/" (unit) "#bed-" (bed) } { (bed) }
                                                },
                                                None => "—",
                                            }
                                        }
                                        td { (p.eid) }
                                    }
                                }
                            }
                        }
                    }
                },
            )
        }
        Err(p) => (
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
            html! {
                p class="notice error" role="alert" id="lookup-error" { (p.detail) }
            },
        ),
    };
    let body = html! {
        h1 { "Patient look-up" }
        (form(&f))
        (results)
    };
    page::respond_with(
        status,
        frame(
            &state,
            &who,
            "Patient look-up",
            "/patients",
            "patients",
            body,
        ),
    )
}
