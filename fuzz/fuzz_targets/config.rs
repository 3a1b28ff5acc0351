//! Any bytes as a plugin configuration: accepted or refused with a JSON path, never a panic;
//! an accepted one is the same when read twice. A refused one's every error (`meshaudit
//! check`) is found without a panic, in bounded steps, and begins with the plugin's own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshaudit::core::{config_errors, Settings};

fuzz_target!(|data: &[u8]| {
    match Settings::from_json(data) {
        Ok(settings) => {
            let again = Settings::from_json(data).expect("deterministic");
            assert_eq!(settings.digest, again.digest);
            assert_eq!(settings.rules.len(), again.rules.len());
            assert!(config_errors(data, &|_| None).is_empty());
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            let all = config_errors(data, &|_| None);
            assert_eq!(all.first(), Some(&error), "the plugin's error first");
            assert!(all.len() <= 50);
        }
    }
});
