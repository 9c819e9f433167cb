//! Arbitrary bytes → a scenario (configuration, connection events, time steps, driver
//! decisions) → played on a checked lifecycle. Any violation of the invariant panics.
//!
//! `cargo +nightly fuzz run lifecycle`
#![no_main]

libfuzzer_sys::fuzz_target!(|scenario: lameduck_core::fuzzing::Scenario| {
    lameduck_core::fuzzing::run(&scenario);
});
