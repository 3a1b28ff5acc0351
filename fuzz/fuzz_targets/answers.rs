//! Any bytes as a captured trail for the answers (`meshaudit summary`, `report`, `policy`): a
//! hostile log line, member or total never panics them, and the same input gives the same
//! answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshaudit::core::trail::event::{Trail, Window};
use meshaudit::core::trail::policy::{impact, suggest, Impact, SuggestOptions, Suggestion};
use meshaudit::core::trail::summary::{summarize, Summary};

fn answers(data: &[u8]) -> (Summary, Suggestion, Vec<Impact>) {
    let mut trail = Trail::default();
    let window = Window::default();
    trail
        .read(data, &window)
        .expect("reading memory cannot fail");
    trail.sort();
    let options = SuggestOptions {
        threshold: 2,
        ..SuggestOptions::default()
    };
    (
        summarize(&trail, &window, true),
        suggest(&trail, &options),
        impact(&trail),
    )
}

fuzz_target!(|data: &[u8]| {
    let first = answers(data);
    assert_eq!(first, answers(data), "deterministic");
});
