use mmstats::{Counter, Stats};

#[derive(Stats)]
struct S {
    #[stat(lable = "typo")]
    c: Counter,
}

fn main() {}
