//! The routes: the original mmash JSON API, `/api/v1/snapshot`,
//! `/metrics`, `/healthz` and the dashboard; bearer-token auth and request
//! logging as middleware.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use mmstats_read::aggregate::{Aggregator, FileSample, Sample, Selector, SeriesValue, View};
use mmstats_read::json::{state_name, FileJson, HistogramJson, ValueJson};
use serde::Serialize;
use serde_json::{json, Value as Json};
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::{App, BODIES_IN_FLIGHT, MAX_QUERY};
use crate::collect::Current;
use crate::prom::{self, FamilyKind};

const DASHBOARD: &str = include_str!("dashboard.html");

/// A 4xx or 5xx with a JSON body `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// The router over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/history", get(history))
        .route("/api/v1/tree", get(tree))
        .route("/stats", get(stats_all))
        .route("/stats/", get(stats_all))
        .route("/stats/{*label}", get(stats_label))
        .route("/files", get(files_all))
        .route("/files/", get(files_all))
        .route("/files/{*glob}", get(files_glob))
        .route("/check/{*label}", get(crate::check::handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Auth, then logging of errors (always) and requests (`--log-requests`).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let started = Instant::now();
    let resp = match &app.auth {
        // The dashboard's page is the one thing served without the token:
        // it is a fixed file that holds no data, and a browser cannot send
        // a bearer header when it loads a page. Its scripts send the token
        // (taken from the URL fragment or typed in) with every data request.
        Some(expected) if !authorised(expected, &req) && !is_dashboard_page(&req) => {
            let mut r = ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong bearer token (send Authorization: Bearer <token>)"
                    .into(),
            }
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        _ => next.run(req).await,
    };
    let status = resp.status();
    if app.log_requests || status.is_client_error() || status.is_server_error() {
        eprintln!(
            "mmash: {method} {} -> {} ({:.1} ms)",
            shorten(&uri),
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    resp
}

/// The URI for a log line, cut so that a huge one does not flood the log.
fn shorten(uri: &Uri) -> String {
    let s = uri.to_string();
    if s.len() <= 200 {
        return s;
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Whether `req` asks for the dashboard's page itself (`GET /`, no query).
fn is_dashboard_page(req: &Request) -> bool {
    req.method() == Method::GET && req.uri().path() == "/" && req.uri().query().is_none()
}

/// Whether `req` carries the token; compared in constant time.
fn authorised(expected: &[u8], req: &Request) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected)))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no such endpoint {}: try /, /metrics, /healthz, /stats/, /files/, /api/v1/snapshot",
            uri.path()
        ),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method {method} not allowed: only GET"),
    }
}

/// A fresh reading, taken on a blocking thread.
async fn current(app: &Arc<App>) -> Result<Arc<Current>, ApiError> {
    let asked = Instant::now();
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || app.collector.current(asked))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("reading the stats files failed: {e}"),
        })
}

/// Parses a query string, allowing only `allowed` keys, each at most once.
fn query(uri: &Uri, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let raw = uri.query().unwrap_or("");
    if raw.len() > MAX_QUERY {
        return Err(ApiError::bad(format!(
            "query string is {} bytes, over the limit of {MAX_QUERY}",
            raw.len()
        )));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            let expected = if allowed.is_empty() {
                "this endpoint takes none".to_owned()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(ApiError::bad(format!(
                "unknown query parameter {k:?}: {expected}"
            )));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::bad(format!("query parameter {k:?} given twice")));
        }
    }
    Ok(out)
}

const JSON: &str = "application/json";

/// How long a request waits for a turn to make a large body (one of
/// [`BODIES_IN_FLIGHT`]) before it is answered 503.
const TURN_WAIT: Duration = Duration::from_secs(10);

/// How long a client may take to read a large body in all, however it
/// trickles; past it the connection is closed and the body freed.
const BODY_DEADLINE: Duration = Duration::from_secs(60);

/// The most of a large body handed to the connection at a time.
const PIECE: usize = 64 * 1024;

/// A turn to make and send a large body.
async fn turn(app: &App) -> Result<OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(TURN_WAIT, Arc::clone(&app.bodies).acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "{BODIES_IN_FLIGHT} large responses are being sent already and none ended \
                 within {TURN_WAIT:?}; try again"
            ),
        }),
    }
}

/// A large body, handed to the connection a piece at a time (each a copy,
/// so the whole is freed with its turn, when the last piece is handed
/// over or the connection dropped).
struct Held {
    body: Vec<u8>,
    sent: usize,
    until: Instant,
    _turn: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.sent >= this.body.len() {
            this.body = Vec::new();
            return Poll::Ready(None);
        }
        if Instant::now() > this.until {
            this.body = Vec::new();
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took over {BODY_DEADLINE:?} to read the response"),
            ))));
        }
        let end = this.body.len().min(this.sent + PIECE);
        let piece = Bytes::copy_from_slice(&this.body[this.sent..end]);
        this.sent = end;
        if end == this.body.len() {
            this.body = Vec::new();
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.body.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.body.len().saturating_sub(self.sent) as u64)
    }
}

/// A 200 with a large body, sent in its `turn`.
fn big(turn: OwnedSemaphorePermit, content_type: &'static str, body: Vec<u8>) -> Response {
    let held = Held {
        body,
        sent: 0,
        until: Instant::now() + BODY_DEADLINE,
        _turn: turn,
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::new(held),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn dashboard(uri: Uri) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD,
    )
        .into_response())
}

async fn metrics(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let mut out = String::with_capacity(64 * 1024);
    let collisions = prom::render(&app.namespace, &cur.families, &mut out);
    crate::retire::render(&cur.sample, &mut out);
    if !collisions.is_empty() {
        app.collector.report_collisions(&collisions);
    }
    Ok(big(
        turn,
        "text/plain; version=0.0.4; charset=utf-8",
        out.into_bytes(),
    ))
}

/// Whether mmash can read what it is to serve, as things are now: the
/// directories are listed and tried again at every request. Another user's
/// `/dev/shm/mmstats-*` entry that cannot be read is listed with its owner
/// and does not fail the check ([`crate::app::DirState::counts`]).
async fn healthz(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    let cur = current(&app).await?;
    let paths = app.paths.clone();
    let states = tokio::task::spawn_blocking(move || crate::app::dir_states(&paths))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("looking at the stats directories failed: {e}"),
        })?;
    let ok = states.iter().all(|d| !d.counts || d.error.is_none());
    let dirs: Vec<Json> = states
        .iter()
        .map(|d| {
            let mut j = json!({"path": d.path, "readable": d.error.is_none(), "owner": d.owner});
            if let Some(e) = &d.error {
                j["error"] = json!(e);
                j["counts"] = json!(d.counts);
            }
            j
        })
        .collect();
    let body = json!({
        "ok": ok,
        "dirs": dirs,
        "files": {
            "alive": cur.sample.alive(),
            "dead": cur.sample.dead(),
            "unreadable": cur.unreadable,
        },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(status, body.to_string().into_bytes()))
}

async fn snapshot(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let q = query(&uri, &["glob"])?;
    let filter = FileFilter::new(q.get("glob").map(String::as_str))?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let files: Vec<FileJson> = filter
        .files(&cur.sample)
        .map(|f| FileJson::new(&f.snapshot))
        .collect();
    Ok(big(turn, JSON, to_json(&files)))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these types cannot fail: string keys, no custom code.
    serde_json::to_vec(v).expect("JSON of plain data")
}

/// `{"stats": [every label, sorted]}`.
async fn stats_all(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let q = query(&uri, &["glob"])?;
    let filter = FileFilter::new(q.get("glob").map(String::as_str))?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let mut labels: Vec<&str> = filter
        .files(&cur.sample)
        .flat_map(|f| f.snapshot.fields.iter().map(|x| x.label.as_str()))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    Ok(big(turn, JSON, to_json(&json!({ "stats": labels }))))
}

/// `{label: [value per file]}` for every label starting with `label`, or
/// one value per label with `aggr`.
async fn stats_label(
    State(app): State<Arc<App>>,
    UrlPath(label): UrlPath<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query(&uri, &["exact", "aggr", "glob"])?;
    check_segments(&label)?;
    let exact = match q.get("exact").map(String::as_str) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "query parameter \"exact\" is {other:?}: expected 1, true, 0 or false"
            )))
        }
    };
    let aggr = match q.get("aggr") {
        None => None,
        Some(a) => Some(
            a.parse::<Aggregator>()
                .map_err(|e| ApiError::bad(format!("query parameter \"aggr\": {e}")))?,
        ),
    };
    let filter = FileFilter::new(q.get("glob").map(String::as_str))?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let wanted = |l: &str| {
        if exact {
            l == label
        } else {
            l.starts_with(&label)
        }
    };
    let body = match aggr {
        None => {
            let mut out: BTreeMap<&str, Vec<ValueJson>> = BTreeMap::new();
            for f in filter.files(&cur.sample) {
                let mut seen = std::collections::HashSet::new();
                for field in &f.snapshot.fields {
                    if wanted(&field.label) && seen.insert(field.label.as_str()) {
                        out.entry(&field.label)
                            .or_default()
                            .push(ValueJson::new(&field.value));
                    }
                }
            }
            to_json(&out)
        }
        Some(aggr) => {
            let sample = filter.sample(&cur.sample);
            let view = View {
                selector: Selector::new(&[label.as_str()])
                    .map_err(|e| ApiError::bad(format!("label: {e}")))?,
                aggregator: Some(aggr),
                ..View::default()
            };
            let delta = view.delta(None, &sample);
            let mut out: BTreeMap<&str, Json> = BTreeMap::new();
            for (key, series) in &delta.series {
                if wanted(&key.label) {
                    out.insert(&key.label, series_json(&series.value));
                }
            }
            to_json(&out)
        }
    };
    Ok(big(turn, JSON, body))
}

/// An aggregated value in the JSON contract's shapes.
fn series_json(v: &SeriesValue) -> Json {
    match v {
        SeriesValue::Int(n) => match (u64::try_from(*n), i64::try_from(*n)) {
            (Ok(u), _) => json!(u),
            (_, Ok(i)) => json!(i),
            // Beyond 64 bits: a float rather than a wrong integer.
            _ => json!(*n as f64),
        },
        SeriesValue::Float(x) => json!(Some(*x).filter(|x| x.is_finite())),
        SeriesValue::Histogram(h) => {
            serde_json::to_value(HistogramJson::new(h)).unwrap_or(Json::Null)
        }
        SeriesValue::Text(t) if t.len() == 1 => json!(t[0]),
        SeriesValue::Text(t) => json!(t),
        SeriesValue::Missing => Json::Null,
    }
}

/// `{"files": [paths]}`.
async fn files_all(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    files_matching(app, None).await
}

async fn files_glob(
    State(app): State<Arc<App>>,
    UrlPath(glob): UrlPath<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    files_matching(app, Some(glob)).await
}

async fn files_matching(app: Arc<App>, glob: Option<String>) -> Result<Response, ApiError> {
    let filter = FileFilter::new(glob.as_deref())?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let files: Vec<String> = filter
        .files(&cur.sample)
        .map(|f| f.id.path.display().to_string())
        .collect();
    Ok(big(turn, JSON, to_json(&json!({ "files": files }))))
}

/// Refuses `..` segments: nothing in a URL may climb out of a directory.
fn check_segments(s: &str) -> Result<(), ApiError> {
    if s.split('/').any(|seg| seg == "..") {
        return Err(ApiError::bad(format!(
            "path {s:?} has a \"..\" segment: paths stay inside the stats directories"
        )));
    }
    if s.contains('\0') {
        return Err(ApiError::bad("path has a NUL byte"));
    }
    Ok(())
}

/// A `glob` over file names relative to their stats directory.
struct FileFilter {
    pattern: Option<glob::Pattern>,
}

impl FileFilter {
    fn new(glob: Option<&str>) -> Result<FileFilter, ApiError> {
        let Some(g) = glob else {
            return Ok(FileFilter { pattern: None });
        };
        check_segments(g)?;
        if g.starts_with('/') {
            return Err(ApiError::bad(format!(
                "glob {g:?} is absolute: patterns are relative to the stats directory"
            )));
        }
        // Matched against the names of the files read, never looked up on
        // disk: a pattern behind a link another user planted answers like
        // any pattern that matches nothing, whatever lies there.
        let pattern = glob::Pattern::new(g)
            .map_err(|e| ApiError::bad(format!("glob {g:?} is not a valid pattern: {e}")))?;
        Ok(FileFilter {
            pattern: Some(pattern),
        })
    }

    fn keeps(&self, f: &FileSample) -> bool {
        match &self.pattern {
            None => true,
            Some(p) => {
                f.id.path
                    .file_name()
                    .is_some_and(|n| p.matches(&n.to_string_lossy()))
            }
        }
    }

    fn files<'a>(&'a self, s: &'a Sample) -> impl Iterator<Item = &'a FileSample> + 'a {
        s.files.iter().filter(|f| f.fresh && self.keeps(f))
    }

    fn sample(&self, s: &Sample) -> Sample {
        s.only(|f| !f.gone && self.keeps(f))
    }
}

/// The dashboard's data: files, and one value per label over every file
/// (counters and histograms cumulative, as on `/metrics`).
async fn summary(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    let now = cur.sample.time;
    let files: Vec<Json> = cur
        .sample
        .files
        .iter()
        .filter(|f| !f.gone)
        .map(|f| {
            let i = &f.snapshot.info;
            let age = now.duration_since(i.created).unwrap_or_default();
            json!({
                "file": f.id.path,
                "pid": i.pid,
                "tid": i.tid,
                "command": i.command,
                "model": i.model,
                "alive": i.writing(),
                "state": state_name(i.state),
                "readable": f.fresh,
                "age_s": age.as_secs_f64(),
            })
        })
        .collect();
    let mut labels: BTreeMap<&str, Json> = BTreeMap::new();
    for fam in &cur.families {
        let kind = match fam.kind {
            FamilyKind::Counter => "counter",
            FamilyKind::Gauge => "gauge",
            FamilyKind::Histogram => "histogram",
            FamilyKind::Timer => "timer",
        };
        let value = total(fam);
        labels.insert(
            &fam.label,
            json!({"kind": kind, "help": fam.help, "value": value}),
        );
    }
    // Text: the first file's value, for the list.
    for f in cur.sample.files.iter().filter(|f| f.fresh) {
        for field in &f.snapshot.fields {
            if crate::collect::family_kind(field.kind).is_none()
                && !labels.contains_key(field.label.as_str())
            {
                labels.insert(
                    &field.label,
                    json!({"kind": field.kind.name(), "help": field.help, "value": ValueJson::new(&field.value)}),
                );
            }
        }
    }
    let body = json!({
        "time_ms": now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "alive": cur.sample.alive(),
        "dead": cur.sample.dead(),
        "unreadable": cur.unreadable,
        "files": files,
        "labels": labels,
    });
    Ok(big(turn, JSON, to_json(&body)))
}

/// One family's value over every group.
fn total(fam: &prom::Family) -> Json {
    let mut int: i128 = 0;
    let mut float: Option<f64> = None;
    let mut hist: Option<mmstats::HistogramSnapshot> = None;
    for s in &fam.series {
        match &s.value {
            prom::SeriesValue::Int(n) => int += n,
            prom::SeriesValue::Float(x) => *float.get_or_insert(0.0) += x,
            prom::SeriesValue::Histogram(h) => match &mut hist {
                None => hist = Some(h.clone()),
                Some(t) => {
                    let _ = t.merge(h);
                }
            },
        }
    }
    if let Some(h) = hist {
        return serde_json::to_value(HistogramJson::new(&h)).unwrap_or(Json::Null);
    }
    match float {
        Some(x) => json!(Some(x + int as f64).filter(|x| x.is_finite())),
        None => series_json(&SeriesValue::Int(int)),
    }
}

/// The dashboard's history of every label over `?window=` (default 5m, at
/// most the ring's 15 minutes), entries newer than `?since=MS` only.
async fn history(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let q = query(&uri, &["window", "since"])?;
    let window = match q.get("window") {
        None => Duration::from_secs(300),
        Some(w) => match crate::retire::parse_duration(w) {
            Ok(Some(d)) if d <= crate::ring::RETENTION => d,
            _ => {
                return Err(ApiError::bad(format!(
                    "query parameter \"window\" is {w:?}: expected a duration above 0 and at \
                     most 15m, e.g. 1m, 5m, 15m"
                )))
            }
        },
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad(format!(
                "query parameter \"since\" is {s:?}: expected milliseconds since the epoch"
            ))
        })?),
    };
    let turn = turn(&app).await?;
    Ok(big(turn, JSON, app.ring.json(window, since)))
}

/// `/api/v1/tree`: the span timers of `mmstats-tracing` as trees per owner,
/// command, model and label prefix, over each file's whole life or, with
/// `window=SECONDS` (1 to 300), over about that many last seconds (the
/// `mmstats_read::tree::json` shape), scoped by `glob`, `user`, `command`
/// and `model` as `/check/` is.
async fn tree(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let q = query(&uri, &["glob", "user", "command", "model", "window"])?;
    let window = match q.get("window") {
        None => None,
        Some(w) => {
            let max = crate::treewin::MAX_WINDOW.as_secs();
            match w.parse::<u64>() {
                Ok(s) if (1..=max).contains(&s) => Some(Duration::from_secs(s)),
                _ => {
                    return Err(ApiError::bad(format!(
                        "window={w:?}: give whole seconds from 1 to {max}"
                    )))
                }
            }
        }
    };
    let filter = FileFilter::new(q.get("glob").map(String::as_str))?;
    let mut scope = check_mmash::scope::Scope::default();
    for key in ["user", "command", "model"] {
        if let Some(v) = q.get(key) {
            scope.set(key, v).map_err(ApiError::bad)?;
        }
    }
    scope.resolve().map_err(ApiError::bad)?;
    let turn = turn(&app).await?;
    let cur = current(&app).await?;
    // On a blocking thread: a tree is linear in the span timers read, and
    // files may hold many.
    let body = tokio::task::spawn_blocking(move || {
        let keep = |f: &FileSample| scope.matches(&f.snapshot.info) && filter.keeps(f);
        app.trees.answer(&cur.sample, keep, window)
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("building the tree failed: {e}"),
    })?;
    Ok(big(turn, JSON, body))
}
