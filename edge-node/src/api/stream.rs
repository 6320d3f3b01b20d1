//! `GET /api/v1/stream`: committed board changes as Server-Sent Events.
//!
//! Each committed change is one `bed` event (`{seq, kind, bed}`, no patient
//! details). A subscriber that falls behind loses notices (the live stream is
//! telemetry: it drops and counts) and receives a `resync` event telling it to
//! re-read the board. Streams end when the appliance shuts down, and when
//! the token that opened them is revoked or expires.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::beds::BedJson;
use super::{AppState, Caller};

/// The live stream.
pub async fn stream(
    State(state): State<AppState>,
    _c: Caller,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.store.subscribe();
    let metrics = state.metrics.clone();
    let hello = futures_util::stream::once(async {
        Ok(Event::default()
            .event("hello")
            .data(json!({ "message": "subscribed; re-read the board on resync" }).to_string()))
    });
    let changes = BroadcastStream::new(rx).map(move |item| {
        Ok(match item {
            Ok(n) => Event::default().event("bed").id(n.seq.to_string()).data(
                json!({ "seq": n.seq, "kind": n.kind, "bed": BedJson::new(&n.bed, false) })
                    .to_string(),
            ),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                metrics.stream_dropped.inc_by(missed);
                Event::default()
                    .event("resync")
                    .data(json!({ "dropped": missed }).to_string())
            }
        })
    });
    let shutdown = state.shutdown.clone().cancelled_owned();
    let token = super::presented_token(&headers, &uri).unwrap_or_default();
    let revoked = state.tokens.clone().invalidated(token);
    let end = async move {
        tokio::select! {
            () = shutdown => {}
            () = revoked => {}
        }
    };
    Sse::new(hello.chain(changes).take_until(end))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
