use mmstats::{Counter, Stats};

#[derive(Stats)]
struct S(Counter);

fn main() {}
