//! `meshaudit report --html FILE`: the summary as one self-contained HTML page with charts.

use std::process::ExitCode;

pub(crate) fn report(_args: &[String]) -> Result<ExitCode, String> {
    Err("report: not yet".into())
}
