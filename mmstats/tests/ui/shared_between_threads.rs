use mmstats::{Counter, Stats};

#[derive(Stats)]
struct WebStats {
    ok: Counter,
}

fn main() {
    let stats = WebStats::open().unwrap();
    // Two threads writing one file: refused, because WebStats is not Sync.
    std::thread::scope(|s| {
        s.spawn(|| stats.ok.incr());
        stats.ok.incr();
    });
}
