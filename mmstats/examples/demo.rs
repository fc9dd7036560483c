//! A demo writer: a small web-server-like stats model, updated for a few
//! seconds (or forever with `--forever`), so `slurpstats` has something to read.
//!
//! ```text
//! cargo run -p mmstats --example demo -- --seconds 2
//! ```

use std::time::{Duration, Instant};

use mmstats::{Constant, Counter, Gauge, GaugeF64, Histogram, Stats, Text, Timer};

/// Request statistics of the demo web front end.
#[derive(Stats)]
#[stats(prefix = "demo.", model = "web")]
struct WebStats {
    /// Responses with a 2xx status.
    #[stat(label = "status.2xx")]
    ok: Counter,
    /// Responses with a 5xx status.
    #[stat(label = "status.5xx")]
    errors: Counter,
    /// Requests being served right now.
    in_flight: Gauge,
    /// One-minute load estimate.
    load: GaugeF64,
    /// What this thread is doing.
    state: Text<64>,
    /// Version of the demo.
    version: Constant,
    /// Time spent serving a request.
    #[stat(label = "request")]
    request: Timer,
    /// Size of responses.
    #[stat(label = "response.size", unit = "bytes")]
    size: Histogram,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut seconds = 2.0f64;
    let mut forever = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a value")?;
                seconds = v.parse().map_err(|e| format!("--seconds {v:?}: {e}"))?;
            }
            "--forever" => forever = true,
            other => {
                return Err(
                    format!("unknown argument {other:?}; use --seconds N or --forever").into(),
                )
            }
        }
    }
    let stats = WebStats::open()?;
    stats.version.set(env!("CARGO_PKG_VERSION"));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut n: u64 = 0;
    while forever || Instant::now() < deadline {
        n += 1;
        stats.state.set("serving");
        stats.in_flight.incr();
        stats
            .request
            .time(|| std::thread::sleep(Duration::from_micros(200 + n % 300)));
        stats.size.record(512 + (n * 7919) % 4096);
        if n.is_multiple_of(50) {
            stats.errors.incr();
        } else {
            stats.ok.incr();
        }
        stats.in_flight.decr();
        stats.load.set((n % 100) as f64 / 100.0);
        stats.state.set("idle");
    }
    eprintln!("demo: served {n} requests; the stats file stays readable after this process exits");
    Ok(())
}
