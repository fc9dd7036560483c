use mmstats::Stats;

#[derive(Stats)]
struct S {
    count: u64,
}

fn main() {}
