//! Misuse that must not compile: sharing one model between threads (two
//! writers on one file), and malformed `#[derive(Stats)]` input.

#[test]
fn misuse_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// The other half of the single-writer rule: a model may move to another
/// thread, and the compiler accepts that.
#[test]
fn a_model_is_send() {
    fn send<T: Send>() {}
    #[derive(mmstats::Stats)]
    struct M {
        _c: mmstats::Counter,
        _t: mmstats::Text<8>,
        _h: mmstats::Timer,
    }
    send::<M>();
    send::<mmstats::Counter>();
}
