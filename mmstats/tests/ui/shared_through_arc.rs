use std::sync::Arc;

use mmstats::{Gauge, Stats};

#[derive(Stats)]
struct Jobs {
    queued: Gauge,
}

fn main() {
    let jobs = Arc::new(Jobs::open().unwrap());
    let other = Arc::clone(&jobs);
    std::thread::spawn(move || other.queued.incr());
    jobs.queued.decr();
}
