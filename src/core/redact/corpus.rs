//! The detectors measured on corpora built from public API descriptions (tests/data/README.md):
//! how often an ordinary name is taken for a credential, and an ordinary path segment for a
//! secret. The figures are in the README ("What is never logged").

use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const NAMES: &str = include_str!("../../../tests/data/credential-names.tsv");
const PATHS: &str = include_str!("../../../tests/data/api-paths.txt");

fn builtin() -> Redaction {
    crate::core::config::Settings::from_json(b"{}")
        .unwrap()
        .redaction
}

#[test]
fn few_ordinary_names_are_taken_for_credentials() {
    let r = builtin();
    let (mut ordinary, mut false_positives, mut credentials, mut caught) = (0, Vec::new(), 0, 0);
    for line in NAMES.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (kind, name, label) = (fields[0], fields[1], fields[2]);
        let lower = name.to_ascii_lowercase();
        let sensitive = match kind {
            "header" => r.is_sensitive_header(&lower),
            _ => r.is_sensitive_param(name.as_bytes()),
        };
        if label == "credential" {
            credentials += 1;
            caught += usize::from(sensitive);
        } else {
            ordinary += 1;
            if sensitive {
                false_positives.push(name);
            }
        }
    }
    let rate = false_positives.len() as f64 / ordinary as f64;
    println!(
        "names: {} of {ordinary} ordinary names sensitive ({:.2}%): {false_positives:?}; {caught} of {credentials} credentials caught",
        false_positives.len(),
        rate * 100.0
    );
    assert!(ordinary > 800 && credentials >= 10);
    assert!(rate < 0.02, "false positives {rate}");
}

#[test]
fn few_ordinary_paths_lose_a_segment_to_a_secret_shape() {
    let r = builtin();
    let (mut paths, mut by_shape, mut by_digits) = (0, Vec::new(), 0);
    for path in PATHS.lines().filter(|l| l.starts_with('/')) {
        paths += 1;
        let recorded = String::from_utf8(r.path(path.as_bytes()).into_owned()).unwrap();
        if ["{jwt}", "{token}", "{iban}", "{card}"]
            .iter()
            .any(|p| recorded.contains(p))
        {
            by_shape.push((path, recorded));
        } else if recorded.contains("{digits}") {
            by_digits += 1;
        }
    }
    let rate = by_shape.len() as f64 / paths as f64;
    println!(
        "paths: {} of {paths} with a secret placeholder ({:.2}%), {by_digits} with {{digits}}: {:?}",
        by_shape.len(),
        rate * 100.0,
        by_shape.iter().take(30).collect::<Vec<_>>()
    );
    assert!(paths > 1900);
    assert!(rate < 0.005, "false positives {rate}");
    // Ids of 9+ digits are replaced by design (README, "What is never logged").
    assert!(
        by_digits * 100 < paths * 3,
        "{by_digits} paths with {{digits}}"
    );
}
