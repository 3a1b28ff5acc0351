//! Every independent error of a configuration in one pass, for `meshaudit check` (native
//! only: the module refuses with the first, which this always reports first, unchanged).
//!
//! Validation stops at its first error. To find the next, the offending value is taken out
//! of the document (a member removed, so its default applies; an array element removed) and
//! the rest validated again, until it passes. What the removal itself causes (a rule whose
//! name was removed now lacks one) is a cascade, not reported: the element it belongs to is
//! removed instead. Paths are reported as they are in the operator's document, whatever
//! earlier removals shifted.

use super::{ConfigError, Settings};
use serde_json::Value;
use std::collections::BTreeMap;

/// At most this many errors: a document that is all errors needs no longer list.
const MAX_ERRORS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `rules[2].match.paths[0]` → `[rules, 2, match, paths, 0]`.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Seg::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

fn path_text(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the value at `segs`; false when there is none.
fn remove(doc: &mut Value, segs: &[Seg]) -> bool {
    let Some((last, parent)) = segs.split_last() else {
        return false;
    };
    let mut at = doc;
    for seg in parent {
        let next = match seg {
            Seg::Key(k) => at.get_mut(k.as_str()),
            Seg::Index(i) => at.get_mut(*i),
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (last, at) {
        (Seg::Key(k), Value::Object(map)) => map.remove(k).is_some(),
        (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// The array elements removed so far, by the array's path in the operator's document.
#[derive(Debug, Default)]
struct Removed {
    indices: BTreeMap<String, Vec<usize>>,
    /// Every path removed, in the operator's document.
    paths: Vec<Vec<Seg>>,
}

impl Removed {
    /// A path of the current document as it is in the operator's.
    fn original(&self, segs: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::new();
        for seg in segs {
            match seg {
                Seg::Key(k) => out.push(Seg::Key(k.clone())),
                Seg::Index(current) => {
                    let gone = self.indices.get(&path_text(&out));
                    let mut original = *current;
                    if let Some(gone) = gone {
                        // The `current`-th element not removed.
                        let mut kept = 0;
                        original = 0;
                        loop {
                            if !gone.contains(&original) {
                                if kept == *current {
                                    break;
                                }
                                kept += 1;
                            }
                            original += 1;
                        }
                    }
                    out.push(Seg::Index(original));
                }
            }
        }
        out
    }

    fn note(&mut self, original: Vec<Seg>) {
        if let Some((Seg::Index(i), array)) = original.split_last() {
            let gone = self.indices.entry(path_text(array)).or_default();
            gone.push(*i);
            gone.sort_unstable();
        }
        self.paths.push(original);
    }

    /// Whether an error at `original` follows from a removal: it is about a removed value's
    /// place, or about what contains one (a member that is now missing).
    fn caused(&self, original: &[Seg]) -> bool {
        self.paths
            .iter()
            .any(|removed| removed.starts_with(original) || original.starts_with(removed))
    }
}

/// serde_json's ` at line L column C`: true of the document validated, not of the operator's.
fn without_position(reason: &str) -> String {
    match reason.rfind(" at line ") {
        Some(at)
            if reason
                .get(at..)
                .is_some_and(|tail| tail.contains(" column ")) =>
        {
            reason.get(..at).unwrap_or(reason).to_string()
        }
        _ => reason.to_string(),
    }
}

/// Every error, the first exactly as the plugin reports it; empty when the configuration is valid.
pub fn config_errors(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
    let first = match Settings::from_json_with_env(bytes, env) {
        Ok(_) => return Vec::new(),
        Err(first) => first,
    };
    let mut errors = vec![first.clone()];
    // Not JSON at all: nothing to take apart.
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else {
        return errors;
    };
    let mut removed = Removed::default();
    let mut error = first;
    while errors.len() < MAX_ERRORS {
        let current = parse_path(&error.path);
        if current.is_empty() {
            break;
        }
        // The value itself, or (when it is absent, as a required member) what holds it.
        let target = if remove(&mut doc, &current) {
            current
        } else {
            let parent = current
                .get(..current.len() - 1)
                .unwrap_or_default()
                .to_vec();
            if parent.is_empty() || !remove(&mut doc, &parent) {
                break;
            }
            parent
        };
        removed.note(removed.original(&target));
        let Ok(text) = serde_json::to_vec(&doc) else {
            break;
        };
        match Settings::from_json_with_env(&text, env) {
            Ok(_) => break,
            Err(next) => {
                let original = removed.original(&parse_path(&next.path));
                if !removed.caused(&original) {
                    errors.push(ConfigError {
                        path: path_text(&original),
                        reason: without_position(&next.reason),
                    });
                }
                error = next;
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: &str) -> Vec<String> {
        config_errors(json.as_bytes(), &|_| None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn three_mistakes_are_three_lines_the_first_as_the_plugin_says_it() {
        let json = r#"{"rules": [
            {"name": "a", "matchh": {}, "action": "audit"},
            {"name": "b", "action": "sample"},
            {"name": "a", "action": "audit"}
        ]}"#;
        let first = Settings::from_json(json.as_bytes())
            .unwrap_err()
            .to_string();
        let all = errors(json);
        assert_eq!(all.len(), 3, "{all:#?}");
        assert_eq!(all[0], first);
        assert!(all[0].starts_with("rules[0].matchh: unknown field `matchh`"));
        assert!(all[1].starts_with("rules[1].sample_rate: required with action \"sample\""));
        assert_eq!(
            all[2],
            "rules[2].name: duplicate rule name \"a\"; rule names must be unique"
        );
    }

    #[test]
    fn paths_stay_the_operators_after_elements_are_removed() {
        let json = r#"{"rules": [
            {"action": "audit"},
            {"name": "ok", "action": "audit"},
            {"name": "x", "action": "audit", "match": {"paths": [{"prefix": "/a"}, {"prefix": "b"}]}}
        ], "default_sample_rate": 7}"#;
        let all = errors(json);
        assert!(
            all[0].starts_with("rules[0]: missing field `name`"),
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|e| e.starts_with("rules[2].match.paths[1].prefix: must start with '/'")),
            "{all:#?}"
        );
        assert!(
            all.iter().any(|e| e.starts_with("default_sample_rate:")),
            "{all:#?}"
        );
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(
            all.iter().skip(1).all(|e| !e.contains(" at line ")),
            "positions of the rewritten document"
        );
    }

    #[test]
    fn a_valid_or_unreadable_configuration() {
        assert!(errors(r#"{"rules": []}"#).is_empty());
        let broken = errors(r#"{"rules": [}"#);
        assert_eq!(broken.len(), 1, "not JSON: one error, where it stops");
    }

    #[test]
    fn removed_elements_map_back_to_the_operators_indices() {
        let mut removed = Removed::default();
        let rules = |i| vec![Seg::Key("rules".into()), Seg::Index(i)];
        removed.note(rules(1));
        removed.note(removed.original(&rules(2)));
        // Removed 1, then (now at 2) the original 3: current 1 is the original 2.
        assert_eq!(removed.original(&rules(1)), rules(2));
        assert_eq!(removed.original(&rules(2)), rules(4));
        assert_eq!(
            parse_path("a.b[3].c[0]"),
            vec![
                Seg::Key("a".into()),
                Seg::Key("b".into()),
                Seg::Index(3),
                Seg::Key("c".into()),
                Seg::Index(0)
            ]
        );
        assert_eq!(
            path_text(&parse_path("rules[2].match.paths[0].prefix")),
            "rules[2].match.paths[0].prefix"
        );
    }
}
