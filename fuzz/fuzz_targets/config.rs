//! Any bytes as a plugin configuration: accepted or refused with a JSON path, never a panic;
//! an accepted one is the same when read twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshaudit::core::Settings;

fuzz_target!(|data: &[u8]| {
    match Settings::from_json(data) {
        Ok(settings) => {
            let again = Settings::from_json(data).expect("deterministic");
            assert_eq!(settings.digest, again.digest);
            assert_eq!(settings.rules.len(), again.rules.len());
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
