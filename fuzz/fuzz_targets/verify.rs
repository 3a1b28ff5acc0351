//! Any bytes as a captured trail: `meshaudit verify` reads every line (an attacker may write
//! the log), reports, and never panics; reading the same input again gives the same report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshaudit::core::trail::verify::{KeySet, Verifier};
use meshaudit::core::trail::TrailKey;

const KEY: &str = "m-fuzz:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn verify(data: &[u8]) -> meshaudit::core::trail::verify::Report {
    let mut keys = KeySet::default();
    keys.add(TrailKey::parse(KEY).expect("a valid key"));
    let mut verifier = Verifier::new(keys);
    verifier.read(data, 0).expect("reading memory cannot fail");
    verifier.finish()
}

fuzz_target!(|data: &[u8]| {
    let report = verify(data);
    assert_eq!(report, verify(data), "deterministic");
});
