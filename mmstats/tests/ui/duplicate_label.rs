use mmstats::{Counter, Stats};

#[derive(Stats)]
struct S {
    #[stat(label = "requests")]
    a: Counter,
    #[stat(label = "requests")]
    b: Counter,
}

fn main() {}
