//! Report formats, each one file in the output directory.

pub mod html;
pub mod junit;
pub mod markdown;
pub mod policyreport;

use std::path::{Path, PathBuf};

use super::report::Report;

/// Escapes text for HTML and XML, content and attributes alike; control
/// characters XML 1.0 forbids become spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `report.html`: self-contained, with charts and filters.
    Html,
    /// `report.md`: for pull requests.
    Md,
    /// `report.json`: the documented schema (docs/audit.md).
    Json,
    /// `report.junit.xml`: one test case per object × policy.
    Junit,
    /// `policyreports.yaml`: one PolicyReport / ClusterPolicyReport per object.
    Policyreport,
}

impl Format {
    /// The file it is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Html => "report.html",
            Format::Md => "report.md",
            Format::Json => "report.json",
            Format::Junit => "report.junit.xml",
            Format::Policyreport => "policyreports.yaml",
        }
    }

    /// The report in this format.
    pub fn render(self, report: &Report) -> String {
        match self {
            Format::Html => html::render(report),
            Format::Md => markdown::render(report),
            Format::Json => serde_json::to_string_pretty(report).expect("reports serialize") + "\n",
            Format::Junit => junit::render(report),
            Format::Policyreport => policyreport::render(report),
        }
    }
}

/// Writes `report` in every format to `dir` (created if missing); returns
/// the files written.
///
/// # Errors
///
/// When the directory or a file cannot be written.
pub fn write(report: &Report, formats: &[Format], dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    formats
        .iter()
        .map(|format| {
            let path = dir.join(format.file_name());
            std::fs::write(&path, format.render(report))?;
            Ok(path)
        })
        .collect()
}
