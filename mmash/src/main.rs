//! `mmash`: every mmstats file on the host over HTTP: the original mmash
//! JSON API, a Prometheus `/metrics` page, `/api/v1/snapshot` in the
//! `slurpstats --json` contract, `/healthz`, a live dashboard at `/` and
//! Nagios checks at `/check/LABEL` ([`check`], with the windows' readings
//! in [`history`]).
//!
//! The stack is `axum` routing on `hyper` 1 and `tokio`; connections are
//! served by `hyper-util`'s HTTP/1 builder so that the header read timeout
//! (slow clients), keep-alive and graceful shutdown are hyper's, not ours.
#![forbid(unsafe_code)]

mod app;
mod check;
mod collect;
mod history;
mod http;
mod prom;
mod retire;
mod ring;
mod treewin;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mmstats_read::aggregate::GroupBy;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::collect::Collector;

const LONG_ABOUT: &str = "\
Serve every mmstats file on the host over HTTP.

Each PATH may be a stats file, a directory or a glob pattern, as slurpstats \
takes them; with none, $MMSTATS_DIR if set, else every /dev/shm/mmstats-* \
directory.

Endpoints (GET only):
  /                    live dashboard
  /api/v1/history      the dashboard's history: every label over the last
                       ?window=1m|5m|15m (entries every 2s, or --sample-every
                       if shorter, at least 1s; 15 minutes kept)
  /metrics             Prometheus text format 0.0.4
  /healthz             whether the directories can be read now; files alive, dead,
                       unreadable (another user's unreadable entry fails nobody)
  /api/v1/snapshot     every file, in the slurpstats --json contract
  /api/v1/tree         the span timers of mmstats-tracing as trees per user, command
                       and model (slurpstats --tree as JSON, at most 10000 nodes);
                       ?window=SECONDS (1-300: the last seconds only), ?user=,
                       ?command=, ?model=, ?glob=
  /stats/              {\"stats\": [every label]}
  /stats/LABEL         {label: [value per file]} for labels starting with LABEL;
                       ?exact=1, ?aggr=sum|avg|min|max|one|nonzero-min|nonzero-avg|count,
                       ?glob=PATTERN (file names in the stats directory)
  /files/, /files/GLOB {\"files\": [paths]}
  /check/LABEL         a Nagios check: one line of plugin output with perfdata;
                       ?aggr=A, ?rate=60s, ?quantile=0.99 or ?stat=mean|count|max|min
                       with ?window=5m, ?warn=RANGE, ?crit=RANGE; status 200 OK,
                       409 WARNING, 503 CRITICAL, 400/404/422 UNKNOWN

With --token-file, every request needs `Authorization: Bearer <token>`, \
except the dashboard's page itself; open it as /#token=TOKEN.

Dead writers' files older than --retire-after are folded into one archive per \
command and model (format-spec.md §2.8): in the directories this user owns, \
and, when mmash runs as root, in every other user's directory by running \
`mmash retire` as that user; \
`mmash retire [DIR...]` does it once, for cron (see `mmash retire --help`).";

/// Parses `argv` (the program name first) as `P`; on an error or for
/// `--help`/`--version`, prints what clap says and gives the exit status:
/// 2 for a usage error, 0 for help and version.
pub(crate) fn parse_args<P: Parser>(argv: Vec<OsString>) -> Result<P, ExitCode> {
    P::try_parse_from(argv).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Takes a fresh reading every `every` in a thread of its own and adds it
/// to the dashboard's ring ([`ring`]), whether a browser is open or not.
/// `every` is `--sample-every`, at most 2 s ([`ring::MAX_INTERVAL`]). `/metrics` counters are the sum of the increases
/// between readings; an increase across a fold is measured against the
/// archive's identity list (format-spec.md §2.8), which a folder prunes
/// once a folded file has been gone for the prune delay. Two readings
/// further apart than that would count the pruned writers' totals again.
fn keep_sampling(app: Arc<App>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("mmash-sampler".into())
        .spawn(move || loop {
            // Fresh, so that the ring's entries are `every` apart; the
            // first at once, so a page opened right away has one.
            let cur = app.collector.current(std::time::Instant::now());
            app.ring.record(&cur);
            app.trees.record(&cur.sample);
            std::thread::sleep(every);
        });
    if let Err(e) = spawned {
        eprintln!("mmash: cannot start the sampling thread: {e}; counters may be miscounted across folds when scrapes are rare");
    }
}

/// Serve every mmstats file on the host over HTTP.
#[derive(Parser, Debug)]
#[command(name = "mmash", version, long_about = LONG_ABOUT, args_override_self = true)]
struct Args {
    /// Stats files, directories or glob patterns [default: $MMSTATS_DIR, or
    /// every /dev/shm/mmstats-* directory]
    #[arg(value_name = "PATH")]
    paths: Vec<OsString>,

    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// File holding the bearer token every request must carry (surrounding
    /// whitespace is ignored)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Prefix of every metric name on /metrics
    #[arg(long, default_value = "")]
    namespace: String,

    /// What /metrics series are split by besides their owner, comma-separated:
    /// command, model, pid, file; "label" for one series per label and
    /// owner. Every series carries its owner as `user="NAME"` whatever this
    /// says, so that one user's files never add to, hide or satisfy another
    /// user's series
    #[arg(long, default_value = "command,model", value_parser = parse_by)]
    by: ByList,

    /// Log every request, not only errors
    #[arg(long)]
    log_requests: bool,

    /// Seconds between full listings of the sources (file events are
    /// watched in between)
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    rescan: f64,

    /// Seconds a client may take to send a request's headers, to send the
    /// next request on a kept-alive connection, and to take more of a
    /// response (a client that stops reading is then dropped)
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    client_timeout: f64,

    /// Most connections served at once; more wait in the listen queue
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,

    /// Fold dead writers' files older than this into archives, in the
    /// directories this user owns (e.g. 90s, 5m, 1h; off: never).
    /// `mmash retire` does it once, for cron.
    #[arg(long, default_value = retire::DEFAULT_RETIRE_AFTER, value_name = "DURATION")]
    retire_after: String,

    /// Read the files at least this often even when no request comes, so
    /// that counters stay exact across folds and prunes between two
    /// scrapes (it must stay under the prune delay, 1m at the least).
    /// They are read every 2s anyway for the dashboard's history, so only
    /// a shorter value changes anything.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    sample_every: String,

    /// Tests only: how long a series no file has is kept (default 15m).
    #[arg(long, hide = true, value_name = "SECONDS")]
    test_series_ttl: Option<f64>,

    /// Tests only: the most labels the dashboard's history keeps.
    #[arg(long, hide = true, value_name = "N", default_value_t = ring::MAX_SERIES)]
    test_history_series: usize,

    /// Tests only: the deadline of each owner's fold child (default 30s).
    #[arg(long, hide = true, value_name = "DURATION")]
    test_fold_deadline: Option<String>,
}

#[derive(Clone, Debug)]
struct ByList(Vec<GroupBy>);

fn parse_by(s: &str) -> Result<ByList, String> {
    if s == "label" || s.is_empty() {
        return Ok(ByList(Vec::new()));
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let g: GroupBy = part.trim().parse().map_err(|e| format!("{e}"))?;
        if g == GroupBy::Label {
            return Err("\"label\" cannot be combined with other groupings".into());
        }
        if out.contains(&g) {
            return Err(format!("{part:?} given twice"));
        }
        out.push(g);
    }
    Ok(ByList(out))
}

/// `by` with the owner first: series of different owners never merge.
fn with_user(by: &[GroupBy]) -> Vec<GroupBy> {
    let mut out = vec![GroupBy::User];
    out.extend(by.iter().copied().filter(|g| *g != GroupBy::User));
    out
}

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Hidden: `--generate-docs DIR` writes the man pages and completions.
    if let Some(dir) = mmstats_docgen::requested(&argv) {
        let completion = Args::command().subcommand(retire::command().name("retire"));
        let pages = [Args::command(), retire::command().name("mmash-retire")];
        return mmstats_docgen::run(&dir, &pages, completion);
    }
    if argv.get(1).is_some_and(|a| a == "retire") {
        return retire::main(argv[1..].to_vec());
    }
    let args: Args = match parse_args(argv) {
        Ok(a) => a,
        Err(code) => return code,
    };
    for (flag, v) in [
        ("--rescan", args.rescan),
        ("--client-timeout", args.client_timeout),
    ] {
        if !v.is_finite() || !(0.0..=1e6).contains(&v) {
            eprintln!("mmash: {flag} {v} is not a number of seconds (0 to 1e6)");
            return ExitCode::from(2);
        }
    }
    if args.client_timeout == 0.0 {
        eprintln!("mmash: --client-timeout must be more than 0 seconds");
        return ExitCode::from(2);
    }
    let auth = match &args.token_file {
        None => None,
        Some(p) => match read_token(p) {
            Ok(t) => Some(format!("Bearer {t}").into_bytes()),
            Err(e) => {
                eprintln!("mmash: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if auth.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "mmash: warning: listening on {} without --token-file: anyone who can reach this \
             address can read every stats file (commands, pids, values)",
            args.listen
        );
    }
    raise_open_files_limit();
    // Files truncated under a reader must read as errors, not kill it.
    if let Err(e) = mmstats::install_sigbus_guard() {
        eprintln!("mmash: cannot install the SIGBUS guard readers need: {e}");
        return ExitCode::FAILURE;
    }
    let retire_after = match retire::parse_duration(&args.retire_after) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mmash: --retire-after {e}");
            return ExitCode::from(2);
        }
    };
    let sample_every = match retire::parse_duration(&args.sample_every) {
        Ok(Some(d)) if d < mmstats_read::retire::MIN_PRUNE_AFTER => d,
        Ok(_) => {
            eprintln!(
                "mmash: --sample-every {:?} must be above 0 and under 1m (the shortest prune delay)",
                args.sample_every
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("mmash: --sample-every {e}");
            return ExitCode::from(2);
        }
    };
    let mut collector = Collector::new(
        &args.paths,
        with_user(&args.by.0),
        Duration::from_secs_f64(args.rescan),
    );
    if let Some(ttl) = args.test_series_ttl.filter(|t| t.is_finite() && *t >= 0.0) {
        collector.series_ttl = Duration::from_secs_f64(ttl);
    }
    let fold_deadline = match args
        .test_fold_deadline
        .as_deref()
        .map(retire::parse_duration)
    {
        None => retire::FOLD_DEADLINE,
        Some(Ok(Some(d))) => d,
        Some(Ok(None)) => {
            eprintln!("mmash: --test-fold-deadline must be above 0");
            return ExitCode::from(2);
        }
        Some(Err(e)) => {
            eprintln!("mmash: --test-fold-deadline {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(after) = retire_after {
        retire::spawn(args.paths.clone(), after, fold_deadline);
    }
    let app = Arc::new(App {
        collector,
        namespace: args.namespace.clone(),
        auth,
        log_requests: args.log_requests,
        paths: args.paths.clone(),
        bodies: Arc::new(Semaphore::new(app::BODIES_IN_FLIGHT)),
        history: Default::default(),
        ring: ring::Ring::new(ring::interval(sample_every), args.test_history_series),
        trees: Default::default(),
    });
    keep_sampling(Arc::clone(&app), sample_every.min(ring::MAX_INTERVAL));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mmash: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(
        app,
        args.listen,
        args.max_connections,
        Duration::from_secs_f64(args.client_timeout),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmash: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard one and logs it: mmash
/// maps one file per writer thread on the host and keeps no descriptor
/// per file, but each connection, lock probe and directory watch needs one.
fn raise_open_files_limit() {
    use rlimit::Resource;
    match Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match Resource::NOFILE.set(hard, hard) {
            Ok(()) => eprintln!("mmash: open files limit raised from {soft} to {hard}"),
            Err(e) => {
                eprintln!("mmash: open files limit stays {soft}: cannot raise it to {hard}: {e}")
            }
        },
        Ok((soft, _)) => eprintln!("mmash: open files limit {soft} (the hard limit)"),
        Err(e) => eprintln!("mmash: cannot read the open files limit: {e}"),
    }
}

fn read_token(p: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("--token-file {}: {e}", p.display()))?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("--token-file {}: the file is empty", p.display()));
    }
    if t.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "--token-file {}: the token must be printable ASCII without spaces",
            p.display()
        ));
    }
    Ok(t.to_owned())
}

async fn serve(
    app: Arc<App>,
    addr: SocketAddr,
    max_connections: usize,
    client_timeout: Duration,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    eprintln!("mmash: listening on http://{local}/");
    let router = http::router(app);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        // Wait for a free slot first, so extra clients queue in the kernel.
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.map_err(|e| e.to_string())?,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: say so and go on after a breath.
                    eprintln!("mmash: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(client_timeout)
            .keep_alive(true)
            .max_buf_size(64 * 1024)
            .serve_connection(
                TokioIo::new(WriteTimeout::new(stream, client_timeout)),
                service,
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's: reset, timed out, bad request.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    eprintln!("mmash: shutting down");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            eprintln!("mmash: requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    Ok(())
}

/// A connection whose writes fail once one has waited `limit` for the
/// client to take more of a response: a client that stops reading is
/// dropped, and the response it held is freed.
struct WriteTimeout {
    stream: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    fn new(stream: TcpStream, limit: Duration) -> WriteTimeout {
        WriteTimeout {
            stream,
            limit,
            stalled: None,
        }
    }

    /// What a write that got `r` gives: its result, unless it has been
    /// waiting since before `limit`.
    fn timed<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.timed(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.timed(cx, r)
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
