//! `GET /check/LABEL`: one aggregated value against `warn` and `crit`, in
//! the Monitoring Plugins output format, with the state in the HTTP status
//! so that the stock `check_http` plugin maps it:
//!
//! | state | status | `check_http` says |
//! | --- | --- | --- |
//! | OK | 200 | OK |
//! | WARNING | [`WARNING_STATUS`] (409) | WARNING |
//! | CRITICAL | 503 | CRITICAL |
//! | UNKNOWN: bad query | 400 | WARNING |
//! | UNKNOWN: no file has the label | 404 | WARNING |
//! | UNKNOWN: nothing to judge yet | 422 | WARNING |
//!
//! The reason phrase of the status line is the plugin's status text
//! (`409 MMSTATS WARNING - web.request p99 0.45 s ...`), since
//! `check_http` prints the status line but not the body. `format=json`
//! gives the measured value as JSON, for `check_mmash`.
//!
//! Rates and windows are measured against [`History`](crate::history),
//! never over less than a quarter of the window asked
//! ([`min_cover`](check_mmash::check::min_cover)): until readings cover
//! that, over the age of the files, and while the files are younger than
//! that too, UNKNOWN (422) saying when to ask again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use check_mmash::check::{
    self, kind_of, measure, measure_histogram, measure_rate, min_cover, no_label, report, unknown,
    window_note, Measure, Spec, Unmeasurable, Why,
};
use check_mmash::State as CheckState;
use hyper::ext::ReasonPhrase;
use mmstats::{HistogramSnapshot, Kind};
use serde_json::json;

use crate::app::{App, MAX_QUERY};
use crate::collect::Current;
use crate::prom::{FamilyKind, SeriesValue};

/// The status of a WARNING: a 4xx, which `check_http` reports as WARNING.
pub const WARNING_STATUS: StatusCode = StatusCode::CONFLICT;

/// Longest reason phrase sent; the full line is in the body.
const MAX_REASON: usize = 300;

/// Whether the sampler task runs.
static SAMPLER: AtomicBool = AtomicBool::new(false);

/// The `/check/{*label}` handler.
pub async fn handler(
    State(app): State<Arc<App>>,
    UrlPath(label): UrlPath<String>,
    uri: Uri,
) -> Response {
    let raw = uri.query().unwrap_or("");
    if raw.len() > MAX_QUERY {
        let msg = format!(
            "query string is {} bytes, over the limit of {MAX_QUERY}",
            raw.len()
        );
        return respond(false, Err((StatusCode::BAD_REQUEST, msg)), &Spec::default());
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let mut as_json = false;
    let mut params = Vec::new();
    for (k, v) in &pairs {
        if k == "format" {
            match v.as_str() {
                "json" => as_json = true,
                "text" => {}
                _ => {
                    let msg = format!("format {v:?}: expected text or json");
                    return respond(false, Err((StatusCode::BAD_REQUEST, msg)), &Spec::default());
                }
            }
        } else {
            params.push((k.as_str(), v.as_str()));
        }
    }
    let spec = match Spec::from_params(&label, params)
        .and_then(|mut s| s.scope.resolve().map(|()| s).map_err(check::SpecError))
    {
        Ok(s) => s,
        Err(e) => {
            return respond(
                as_json,
                Err((StatusCode::BAD_REQUEST, e.0)),
                &Spec::default(),
            )
        }
    };
    if app.history.want(spec.history(), None).is_some() {
        start_sampler(&app);
    }
    let asked = Instant::now();
    let a = Arc::clone(&app);
    // Kept under the label and the check's scope (`user=` ...).
    let watch = spec
        .history()
        .is_some()
        .then(|| (label.clone(), spec.scope.key(&label)));
    let (rate, stat) = (spec.rate.is_some(), spec.stat.is_some());
    let cur = match tokio::task::spawn_blocking(move || {
        let cur = a.collector.current(asked);
        // Only a label the files have, of the kind the check measures,
        // takes one of the few places for kept labels.
        if let Some((l, key)) = watch {
            match cur.families.iter().find(|f| f.label == l).map(|f| f.kind) {
                Some(FamilyKind::Histogram | FamilyKind::Timer) if stat => {
                    a.history.want(None, Some(&key));
                }
                Some(FamilyKind::Counter) if rate => a.history.want_counter(&key),
                _ => {}
            }
        }
        a.history.record(&cur);
        cur
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("reading the stats files failed: {e}");
            return respond(
                as_json,
                Err((StatusCode::INTERNAL_SERVER_ERROR, msg)),
                &spec,
            );
        }
    };
    let result = evaluate(&app, &spec, &cur).map_err(|u| {
        let status = match u.why {
            Why::NoLabel => StatusCode::NOT_FOUND,
            Why::Mismatch => StatusCode::BAD_REQUEST,
            Why::NoValue => StatusCode::UNPROCESSABLE_ENTITY,
        };
        (status, u.message)
    });
    respond(as_json, result, &spec)
}

/// Reads the files every history spacing, once a check asked for a window.
fn start_sampler(app: &Arc<App>) {
    // Relaxed: only which caller starts the task matters, no data is
    // published through the flag.
    if SAMPLER.swap(true, Ordering::Relaxed) {
        return;
    }
    let app = Arc::clone(app);
    tokio::spawn(async move {
        loop {
            let gap = app
                .history
                .want(None, None)
                .unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(gap).await;
            let a = Arc::clone(&app);
            let _ = tokio::task::spawn_blocking(move || {
                let cur = a.collector.current(Instant::now());
                a.history.record(&cur);
            })
            .await;
        }
    });
}

/// The measure for `spec` in the reading `cur`.
fn evaluate(app: &App, spec: &Spec, cur: &Current) -> Result<Measure, Unmeasurable> {
    let label = spec.label.as_str();
    let key = spec.scope.key(label);
    let now = cur.sample.instant;
    let family = cur.families.iter().find(|f| f.label == label);
    // The family's series in the check's scope; none if its series do not
    // carry a scoped key (mmash not split by it): then only the files
    // below answer, scoped one by one.
    let series: Vec<&crate::prom::Series> = match family {
        Some(fam) => {
            let scoped: Option<Vec<bool>> = fam
                .series
                .iter()
                .map(|s| spec.scope.matches_labels(&s.labels))
                .collect();
            match scoped {
                Some(keep) => fam
                    .series
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(s, _)| s)
                    .collect(),
                None => return measure(spec, None, &cur.sample),
            }
        }
        None => Vec::new(),
    };
    if let (Some(window), Some(fam)) = (spec.rate, family) {
        if fam.kind != FamilyKind::Counter {
            check::check_kind(spec, kind_of_family(fam.kind))?;
        }
        let total: i128 = series
            .iter()
            .map(|s| match s.value {
                SeriesValue::Int(n) => n,
                _ => 0,
            })
            .sum();
        // A baseline closer than a quarter of the window (two checks in
        // the same second of a label mmash had no reading of) is no
        // measure: the files' age answers instead, or UNKNOWN.
        if let Some(base) = app.history.counter_baseline(&key, window, now) {
            if base.covered >= min_cover(window) {
                // A series dropped since (its files gone for SERIES_TTL)
                // takes its total out of the sum: then the history cannot
                // tell the increase, and the files answer instead.
                if total >= base.value {
                    return measure_rate(spec, total - base.value, base.covered, window);
                }
            }
        }
    }
    if let (Some(window), Some(_), Some(fam)) = (spec.window, spec.stat, family) {
        let kind = kind_of_family(fam.kind);
        check::check_kind(spec, kind)?;
        let mut now_hist: Option<HistogramSnapshot> = None;
        for s in &series {
            if let SeriesValue::Histogram(h) = &s.value {
                match &mut now_hist {
                    None => now_hist = Some(h.clone()),
                    Some(t) => {
                        let _ = t.merge(h);
                    }
                }
            }
        }
        let unit = kind_of(&cur.sample, label)
            .map(|(_, u)| u)
            .unwrap_or_default();
        if let (Some(h), Some(base)) = (
            now_hist,
            app.history
                .histogram_baseline(&key, window, now)
                .filter(|b| b.covered >= min_cover(window)),
        ) {
            let Ok(win) = h.since(&base.value) else {
                // The layout changed (files replaced): no comparable past.
                return measure(spec, None, &cur.sample);
            };
            return measure_histogram(spec, kind, &unit, &win, window_note(window, base.covered));
        }
    }
    if family.is_none()
        && spec.aggr != Some(mmstats_read::aggregate::Aggregator::Count)
        && kind_of(&cur.sample, label).is_none()
    {
        return Err(no_label(label));
    }
    // No window, or no earlier reading covering a quarter of it: from the
    // files themselves (UNKNOWN if they are younger than that too).
    measure(spec, None, &cur.sample)
}

fn kind_of_family(k: FamilyKind) -> Kind {
    match k {
        FamilyKind::Counter => Kind::Counter,
        FamilyKind::Gauge => Kind::Gauge,
        FamilyKind::Histogram => Kind::Histogram,
        FamilyKind::Timer => Kind::Timer,
    }
}

/// The response: the plugin line (or JSON), the status for the state and
/// the status text as reason phrase.
fn respond(as_json: bool, result: Result<Measure, (StatusCode, String)>, spec: &Spec) -> Response {
    let (state, line, status, measure) = match result {
        Ok(m) => {
            let (state, line) = report(&m, spec.warn.as_ref(), spec.crit.as_ref());
            let status = match state {
                CheckState::Ok => StatusCode::OK,
                CheckState::Warning => WARNING_STATUS,
                CheckState::Critical => StatusCode::SERVICE_UNAVAILABLE,
                // A value that is not a number.
                CheckState::Unknown => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (state, line, status, Some(m))
        }
        Err((status, msg)) => (CheckState::Unknown, unknown(&msg), status, None),
    };
    let body = if as_json {
        let measure = measure.map(|m| {
            json!({
                "label": m.label,
                "what": m.what,
                "value": Some(m.value).filter(|v| v.is_finite()),
                "uom": m.uom.as_str(),
                "min": m.min,
                "note": m.note,
            })
        });
        let mut j = json!({"state": state.word(), "line": line, "measure": measure});
        if state == CheckState::Unknown {
            j["error"] = json!(line.trim_start_matches("MMSTATS UNKNOWN - "));
        }
        j.to_string()
    } else {
        format!("{line}\n")
    };
    let content_type = if as_json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(reason) = reason_phrase(&line) {
        resp.extensions_mut().insert(reason);
    }
    resp
}

/// The status text (no perfdata) as a reason phrase: printable ASCII, cut
/// to [`MAX_REASON`] bytes.
fn reason_phrase(line: &str) -> Option<ReasonPhrase> {
    let text = line.split(" | ").next().unwrap_or(line);
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    out.truncate(MAX_REASON);
    ReasonPhrase::try_from(out.into_bytes()).ok()
}
