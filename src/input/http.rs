//! The HTTP ingest listener: KairosDB's `POST /api/v1/datapoints` (and
//! `GET /api/v1/version`, `/api/v1/health/check`) and IRONdb's
//! `PUT|POST /raw` (TSV, or a Circonus FlatBuffer MetricList when the
//! Content-Type says so), answered as IRONdb answers.
//!
//! Bodies are bounded before and after gzip decompression, so a gzip bomb
//! is refused, not expanded. Valid points of a request are relayed even
//! when others in it are invalid (KairosDB ingests partially too); the
//! answer is 204, or 400 with `{"errors": [...]}` listing every problem.
//! The answer waits until the points are queued, so a `block` queue slows
//! HTTP senders down.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::RejectLog;
use crate::codec::{circonus_fb, irondb_tsv, kairos_json, Reason, Rejects};
use crate::config::ListenerConfig;
use crate::model::Batch;
use crate::route::RouterHandle;
use crate::telemetry::ListenerMetrics;

#[derive(Clone)]
struct HttpState {
    limiter: Option<Arc<crate::rate::PeerLimiter>>,
    config: Arc<ListenerConfig>,
    router: RouterHandle,
    metrics: ListenerMetrics,
    reject_log: RejectLog,
}

/// Serves HTTP ingest until cancelled.
///
/// # Errors
/// The server's I/O error.
pub async fn run_http(
    config: ListenerConfig,
    listener: TcpListener,
    router: RouterHandle,
    metrics: ListenerMetrics,
    token: CancellationToken,
) -> std::io::Result<()> {
    let max_body = config.max_body_bytes;
    let request_timeout = config.request_timeout;
    let state = HttpState {
        limiter: super::peer_limiter(&config),
        config: Arc::new(config),
        router,
        metrics,
        reject_log: RejectLog::default(),
    };
    let app = axum::Router::new()
        .route("/api/v1/datapoints", post(kairos_datapoints))
        .route("/api/v1/version", get(version))
        .route(
            "/api/v1/health/check",
            get(|| async { StatusCode::NO_CONTENT }),
        )
        .route("/raw", post(irondb_raw).put(irondb_raw))
        .layer(DefaultBodyLimit::max(max_body))
        // A slow upload cannot hold a connection and its buffer for ever.
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(request_timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => error_response(
                        StatusCode::REQUEST_TIMEOUT,
                        &format!("request not completed within {request_timeout:?}"),
                    ),
                }
            },
        ))
        .with_state(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(token.cancelled_owned())
    .await
}

async fn version() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"version\": \"tsrelay {}\"}}", env!("CARGO_PKG_VERSION")),
    )
}

async fn kairos_datapoints(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(&state, peer, &headers, &body, Reason::InvalidJson) {
        Ok(body) => body,
        Err((status, message)) => return errors_response(status, vec![message]),
    };
    let mut batch = Batch::new();
    let outcome = kairos_json::parse_body(&body, &mut batch);
    if let Some(first) = outcome.errors.first() {
        let mut rejects = Rejects::default();
        rejects.add_with_detail(Reason::InvalidMetric, &body[..body.len().min(200)], || {
            first.clone()
        });
        rejects.add_many(Reason::InvalidMetric, outcome.errors.len() as u64 - 1);
        state.metrics.count_rejects(&rejects);
        state.reject_log.log(&state.config.name, peer, &rejects);
    }
    if !relay(&state, peer, batch).await {
        return errors_response(
            StatusCode::SERVICE_UNAVAILABLE,
            vec![
                "the relay is shutting down before these points were safe; send them again"
                    .to_owned(),
            ],
        );
    }
    if outcome.errors.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        errors_response(StatusCode::BAD_REQUEST, outcome.errors)
    }
}

/// Rate-limits and routes a request's points. With `ack: safe` it waits
/// until every copy is delivered or spooled; false when they were not.
async fn relay(state: &HttpState, peer: SocketAddr, mut batch: Batch) -> bool {
    if batch.is_empty() {
        return true;
    }
    state.metrics.points_received.inc_by(batch.len() as u64);
    super::limit_rate(state.limiter.as_deref(), peer, &mut batch, &state.metrics).await;
    if !state.config.ack_safe {
        state.router.dispatch(batch).await;
        return true;
    }
    let (part, waiter) = crate::receipt::receipt();
    state.router.dispatch_tracked(batch, Some(part)).await;
    waiter.wait().await
}

/// The media type that marks a `/raw` body as a FlatBuffer MetricList.
const FLATBUFFER_CONTENT_TYPE: &str = "application/x-circonus-metric-list-flatbuffer";

async fn irondb_raw(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(&state, peer, &headers, &body, Reason::BadEncoding) {
        Ok(body) => body,
        Err((status, message)) => return error_response(status, &message),
    };
    let flatbuffer = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case(FLATBUFFER_CONTENT_TYPE))
        });
    let mut batch = Batch::new();
    let mut rejects = Rejects::default();
    let (records, errors) = if flatbuffer {
        match circonus_fb::decode(&body, &mut batch, &mut rejects) {
            Ok(outcome) => (outcome.records, outcome.errors),
            Err(err) => {
                let message = format!("invalid MetricList FlatBuffer: {err}");
                count_reject(&state, peer, Reason::BadFlatbuffer, &message);
                return error_response(StatusCode::BAD_REQUEST, &message);
            }
        }
    } else {
        let outcome = irondb_tsv::parse_body(&body, &mut batch, &mut rejects);
        (outcome.records, outcome.errors)
    };
    if rejects.total() > 0 {
        state.metrics.count_rejects(&rejects);
        state.reject_log.log(&state.config.name, peer, &rejects);
    }
    if !relay(&state, peer, batch).await {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay is shutting down before these points were safe; send them again",
        );
    }
    let body = serde_json::json!({
        "records": records,
        "updated": records.saturating_sub(errors),
        "misdirected": 0,
        "errors": errors,
    })
    .to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `{"error": "..."}` with the given status (IRONdb's `/raw` style).
fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A request's body, counted and decompressed within the listener's
/// limits; or the status and message to answer with. A body that cannot
/// be decompressed is counted as a reject for `reason`.
fn read_body<'b>(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &'b Result<Bytes, BytesRejection>,
    reason: Reason,
) -> Result<std::borrow::Cow<'b, [u8]>, (StatusCode, String)> {
    let body = body.as_ref().map_err(|rejection| {
        (
            rejection.status(),
            format!("request body rejected: {}", rejection.body_text()),
        )
    })?;
    state.metrics.bytes_received.inc_by(body.len() as u64);
    decompress(headers, body, state.config.max_decompressed_bytes).map_err(|message| {
        count_reject(state, peer, reason, &message);
        (StatusCode::BAD_REQUEST, message)
    })
}

fn count_reject(state: &HttpState, peer: SocketAddr, reason: Reason, message: &str) {
    let mut rejects = Rejects::default();
    rejects.add_with_detail(reason, &[], || message.to_owned());
    state.metrics.count_rejects(&rejects);
    state.reject_log.log(&state.config.name, peer, &rejects);
}

/// `{"errors": [...]}` with the given status.
fn errors_response(status: StatusCode, errors: Vec<String>) -> Response {
    let body = serde_json::json!({ "errors": errors }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The body as sent, or gunzipped when the headers say gzip (KairosDB
/// accepts `Content-Encoding: gzip` and `Content-Type: application/gzip`),
/// never expanding past `max` bytes.
fn decompress<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    max: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    let says = |name: header::HeaderName, needle: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains(needle))
        })
    };
    if !says(header::CONTENT_ENCODING, "gzip") && !says(header::CONTENT_TYPE, "application/gzip") {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|err| format!("invalid gzip body: {err}"))?;
    if out.len() > max {
        return Err(format!(
            "decompressed body exceeds the limit of {max} bytes"
        ));
    }
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("write");
        encoder.finish().expect("finish")
    }

    #[test]
    fn gzip_bodies_are_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().expect("header"));
        let small = gzip(b"[1,2,3]");
        assert_eq!(
            decompress(&headers, &small, 100).expect("fits").as_ref(),
            b"[1,2,3]"
        );
        let bomb = gzip(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000);
        let err = decompress(&headers, &bomb, 1_000_000).expect_err("too large");
        assert!(err.contains("exceeds the limit"), "{err}");
        assert!(decompress(&headers, b"not gzip", 100).is_err());
        let mut plain = HeaderMap::new();
        plain.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        assert_eq!(decompress(&plain, b"[]", 1).expect("as is").as_ref(), b"[]");
        let mut typed = HeaderMap::new();
        typed.insert(
            header::CONTENT_TYPE,
            "application/gzip".parse().expect("header"),
        );
        assert_eq!(
            decompress(&typed, &small, 100).expect("fits").as_ref(),
            b"[1,2,3]"
        );
    }
}
