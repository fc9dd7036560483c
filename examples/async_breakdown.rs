//! Waiting or working: an HTTP server on a single-threaded tokio runtime
//! with two endpoints, and the five async measures of each in its stats
//! file.
//!
//! - `GET /upstream` asks a slow upstream (a TCP server on another thread
//!   that answers after 50 ms) through a blocking client on tokio's
//!   blocking pool, sends the response, then writes an "audit log" (a 5 ms
//!   wait) before the handler is done. It mostly waits.
//! - `GET /burn` spins the CPU for 20 ms without yielding, holding the
//!   event loop: every other task that is ready meanwhile waits for it.
//!
//! A load generator on other threads keeps hitting both: four clients on
//! `/upstream` back to back, one on `/burn` with a 20 ms pause between
//! requests (the loop is then busy about half the time).
//!
//! Each endpoint's handler runs in `PerThread::instrument` with every
//! measure on, and its request in `PerThread::start_request`, into fields
//! `upstream.*` and `burn.*`: `requests`, `response` and `duration` (the
//! request guard), `wall` and `busy`, `external`, `scheduled`,
//! `slow_polls` and `slow_poll_time` (over 1 ms), `cpu`. The files go
//! where any writer's go (`MMSTATS_DIR` if set). Watch it with
//!
//! ```text
//! cargo run --example async_breakdown -- --forever &
//! cargo run -p pollstats -- upstream. burn.
//! ```
//!
//! Usage: `async_breakdown [--seconds N | --forever]` (default 10 s).
//!
//! Why the upstream client is on the blocking pool: on a current-thread
//! runtime, tokio's I/O and timer drivers run on the loop's own thread, so
//! a socket that becomes readable while `/burn` holds the loop is only
//! noticed, and its task woken, once `/burn` lets go. That wait then shows
//! as external time, not scheduled delay: the wake itself was late. A
//! wake from another thread (the blocking pool here; a channel from a
//! client thread, a multi-threaded runtime's other workers) comes when the
//! answer does, and the wait for the loop after it is scheduled delay.
//! The 5 ms audit-log sleep is a timer, so its share of the blocking shows
//! as external time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmstats::{Counter, Instrumented, Stats, Timer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the upstream takes to answer.
const UPSTREAM_DELAY: Duration = Duration::from_millis(50);
/// The "audit log" written after `/upstream` has responded.
const AUDIT_LOG: Duration = Duration::from_millis(5);
/// How long `/burn` holds the loop.
const BURN: Duration = Duration::from_millis(20);

/// The async measures of both endpoints (the server's one thread).
#[derive(Stats)]
#[stats(prefix = "")]
struct Breakdown {
    /// Requests to /upstream.
    #[stat(label = "upstream.requests")]
    up_requests: Counter,
    /// /upstream: from the request read to the response written.
    #[stat(label = "upstream.response")]
    up_response: Timer,
    /// /upstream: from the request read to the handler done.
    #[stat(label = "upstream.duration")]
    up_duration: Timer,
    /// /upstream: the handler future, first poll to completion.
    #[stat(label = "upstream.wall")]
    up_wall: Timer,
    /// /upstream: time inside the handler's polls.
    #[stat(label = "upstream.busy")]
    up_busy: Timer,
    /// /upstream: time waiting for what the handler awaits.
    #[stat(label = "upstream.external")]
    up_external: Timer,
    /// /upstream: time woken but not yet polled.
    #[stat(label = "upstream.scheduled")]
    up_scheduled: Timer,
    /// /upstream: polls of 1 ms or more.
    #[stat(label = "upstream.slow_polls")]
    up_slow_polls: Counter,
    /// /upstream: the duration of each slow poll.
    #[stat(label = "upstream.slow_poll_time")]
    up_slow_poll_time: Timer,
    /// /upstream: thread CPU time inside the handler's polls.
    #[stat(label = "upstream.cpu")]
    up_cpu: Timer,

    /// Requests to /burn.
    #[stat(label = "burn.requests")]
    burn_requests: Counter,
    /// /burn: from the request read to the response written.
    #[stat(label = "burn.response")]
    burn_response: Timer,
    /// /burn: from the request read to the handler done.
    #[stat(label = "burn.duration")]
    burn_duration: Timer,
    /// /burn: the handler future, first poll to completion.
    #[stat(label = "burn.wall")]
    burn_wall: Timer,
    /// /burn: time inside the handler's polls.
    #[stat(label = "burn.busy")]
    burn_busy: Timer,
    /// /burn: time waiting for what the handler awaits.
    #[stat(label = "burn.external")]
    burn_external: Timer,
    /// /burn: time woken but not yet polled.
    #[stat(label = "burn.scheduled")]
    burn_scheduled: Timer,
    /// /burn: polls of 1 ms or more.
    #[stat(label = "burn.slow_polls")]
    burn_slow_polls: Counter,
    /// /burn: the duration of each slow poll.
    #[stat(label = "burn.slow_poll_time")]
    burn_slow_poll_time: Timer,
    /// /burn: thread CPU time inside the handler's polls.
    #[stat(label = "burn.cpu")]
    burn_cpu: Timer,
}

mmstats::per_thread!(static STATS: Breakdown);

type TimerOf = fn(&Breakdown) -> &Timer;
type CounterOf = fn(&Breakdown) -> &Counter;

/// The fields of one endpoint.
struct Endpoint {
    requests: CounterOf,
    response: TimerOf,
    duration: TimerOf,
    wall: TimerOf,
    busy: TimerOf,
    external: TimerOf,
    scheduled: TimerOf,
    slow_polls: CounterOf,
    slow_poll_time: TimerOf,
    cpu: TimerOf,
}

const UPSTREAM: Endpoint = Endpoint {
    requests: |s| &s.up_requests,
    response: |s| &s.up_response,
    duration: |s| &s.up_duration,
    wall: |s| &s.up_wall,
    busy: |s| &s.up_busy,
    external: |s| &s.up_external,
    scheduled: |s| &s.up_scheduled,
    slow_polls: |s| &s.up_slow_polls,
    slow_poll_time: |s| &s.up_slow_poll_time,
    cpu: |s| &s.up_cpu,
};

const BURN_ENDPOINT: Endpoint = Endpoint {
    requests: |s| &s.burn_requests,
    response: |s| &s.burn_response,
    duration: |s| &s.burn_duration,
    wall: |s| &s.burn_wall,
    busy: |s| &s.burn_busy,
    external: |s| &s.burn_external,
    scheduled: |s| &s.burn_scheduled,
    slow_polls: |s| &s.burn_slow_polls,
    slow_poll_time: |s| &s.burn_slow_poll_time,
    cpu: |s| &s.burn_cpu,
};

impl Endpoint {
    /// `handler` with every async measure on, into this endpoint's fields.
    fn instrument<F: std::future::Future>(&self, handler: F) -> Instrumented<F, Breakdown> {
        STATS
            .instrument(handler, self.wall, self.busy)
            .external(self.external)
            .scheduled(self.scheduled)
            .slow_polls(self.slow_polls, self.slow_poll_time)
            .cpu(self.cpu)
    }
}

fn main() -> ExitCode {
    let run_for = match parse_args() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("async_breakdown: {e}\nusage: async_breakdown [--seconds N | --forever]");
            return ExitCode::from(2);
        }
    };
    match run(run_for) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_breakdown: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long to run: `None` for ever.
fn parse_args() -> Result<Option<Duration>, String> {
    let mut run_for = Some(Duration::from_secs(10));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--forever" => run_for = None,
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a number")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--seconds {v:?}: not a number of seconds"))?;
                run_for = Some(
                    Duration::try_from_secs_f64(secs)
                        .map_err(|_| format!("--seconds {v:?}: out of range"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(run_for)
}

fn run(run_for: Option<Duration>) -> std::io::Result<()> {
    let upstream = start_upstream()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    // Open this thread's stats file now, so a failure shows at once.
    STATS.with(|_| ());
    if let Some(e) = STATS.error() {
        eprintln!("async_breakdown: stats in private memory: {e}");
    }
    println!("listening on {addr}, upstream on {upstream}");

    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_load(addr, &stop);
    rt.block_on(async {
        let serve = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, upstream));
                    }
                    Err(e) => eprintln!("async_breakdown: accept: {e}"),
                }
            }
        };
        match run_for {
            Some(d) => {
                tokio::select! {
                    () = serve => {}
                    () = tokio::time::sleep(d) => {}
                }
            }
            None => serve.await,
        }
    });
    // Relaxed: a flag the clients poll; nothing else is published with it.
    stop.store(true, Ordering::Relaxed);
    // The clients' last requests fail once the listener (and with it the
    // connections not yet accepted) and the runtime (every connection's
    // task) are gone: then they stop.
    drop(listener);
    drop(rt);
    for c in clients {
        let _ = c.join();
    }
    let (up, burn) = STATS.with(|s| (s.up_requests.get(), s.burn_requests.get()));
    println!("served {up} /upstream and {burn} /burn requests");
    Ok(())
}

/// One connection: reads the request, dispatches on its path.
async fn connection(mut stream: tokio::net::TcpStream, upstream: SocketAddr) {
    let path = match read_request(&mut stream).await {
        Ok(path) => path,
        Err(_) => return,
    };
    let _ = match path.as_str() {
        "/upstream" => UPSTREAM.instrument(ask_upstream(stream, upstream)).await,
        "/burn" => BURN_ENDPOINT.instrument(burn(stream)).await,
        _ => respond(&mut stream, "404 Not Found", "no such endpoint\n").await,
    };
}

/// `/upstream`: waits for the upstream, responds, then writes the audit log.
async fn ask_upstream(
    mut stream: tokio::net::TcpStream,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    STATS.with(|s| (UPSTREAM.requests)(s).incr());
    let mut req = STATS.start_request(UPSTREAM.response, UPSTREAM.duration);
    // The upstream's client blocks, so it runs on tokio's blocking pool,
    // which wakes this task from its own thread the moment the answer is
    // in (see the module docs for why that matters here).
    let answer = tokio::task::spawn_blocking(move || ask(upstream))
        .await
        .map_err(std::io::Error::other)??;
    respond(&mut stream, "200 OK", &answer).await?;
    req.responded();
    tokio::time::sleep(AUDIT_LOG).await;
    Ok(())
}

/// `/burn`: holds the loop for `BURN`, then responds.
async fn burn(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    STATS.with(|s| (BURN_ENDPOINT.requests)(s).incr());
    let mut req = STATS.start_request(BURN_ENDPOINT.response, BURN_ENDPOINT.duration);
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < BURN {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    respond(&mut stream, "200 OK", &format!("burnt {x}\n")).await?;
    req.responded();
    Ok(())
}

/// The upstream's blocking client: one question, one answer.
fn ask(upstream: SocketAddr) -> std::io::Result<String> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(b"ask\n")?;
    let mut answer = String::new();
    up.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Reads an HTTP request head and returns its path.
async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    Ok(path.to_owned())
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    stream.shutdown().await
}

/// The slow upstream: a thread per connection, answering each line after
/// `UPSTREAM_DELAY`.
fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_ok() {
                    std::thread::sleep(UPSTREAM_DELAY);
                    let _ = (&stream).write_all(b"upstream says hello\n");
                }
            });
        }
    });
    Ok(addr)
}

/// The load: four clients on `/upstream`, one on `/burn` pausing `BURN`
/// between requests, until `stop`.
fn start_load(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let client = |path: &'static str, pause: Duration| {
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            // Relaxed: see `run`.
            while !stop.load(Ordering::Relaxed) {
                if get(addr, path).is_err() {
                    break;
                }
                std::thread::sleep(pause);
            }
        })
    };
    let mut clients: Vec<_> = (0..4)
        .map(|_| client("/upstream", Duration::ZERO))
        .collect();
    clients.push(client("/burn", BURN));
    clients
}

/// One request; the response is read to the end.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200 response"));
    }
    Ok(())
}
