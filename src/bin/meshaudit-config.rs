//! meshaudit-config: check plugin configurations the way Envoy will, before applying them.
//!
//!   meshaudit-config check [--assume-hmac-key] FILE...   validate JSON plugin configurations
//!   meshaudit-config schema                               print the configuration's JSON Schema
//!
//! `check` runs the very validation the plugin runs in `on_configure` and prints the
//! same line Envoy would log. A configuration that hashes needs the HMAC key from the
//! VM's environment: `check` reads it from its own environment, or with
//! `--assume-hmac-key` takes it as provided at run time (for pipelines without the secret).

use meshaudit::core::{RawConfig, Settings};
use std::process::ExitCode;

const USAGE: &str =
    "usage: meshaudit-config check [--assume-hmac-key] FILE... | meshaudit-config schema";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("schema") if args.len() == 1 => {
            let schema = schemars::schema_for!(RawConfig);
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshaudit-config: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("check") => {
            let assume_key = args.iter().any(|a| a == "--assume-hmac-key");
            let files: Vec<&String> = args
                .iter()
                .skip(1)
                .filter(|a| !a.starts_with("--"))
                .collect();
            if files.is_empty() {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            let mut failed = false;
            for file in files {
                match check(file, assume_key) {
                    Ok(summary) => println!("{file}: ok ({summary})"),
                    Err(message) => {
                        println!("{file}: {message}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(file: &str, assume_key: bool) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let env = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            assume_key.then(|| "provided-at-run-time-by-the-vm-environment".to_string())
        })
    };
    let settings = Settings::from_json_with_env(&bytes, &env)
        .map_err(|e| format!("meshaudit: invalid plugin configuration: {e}"))?;
    Ok(format!(
        "{} rules, digest {}",
        settings.rules.len(),
        settings.digest
    ))
}
