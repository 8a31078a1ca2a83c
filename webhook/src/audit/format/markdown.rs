//! Markdown, for pull requests and CI summaries.

use std::fmt::Write;

use crate::audit::report::Report;

/// Violations listed in full; beyond this the rest are counted, so a
/// comment stays within what code hosts accept.
const MAX_ROWS: usize = 500;

/// Escapes text for a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The report as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let t = &report.summary.total;
    let _ = writeln!(out, "# Tollgate audit report\n");
    let _ = writeln!(
        out,
        "{} objects from {}, {}: **{} fail**, {} warn, {} error, {} pass.\n",
        report.summary.objects,
        report.source,
        crate::audit::report::timestamp(report.generated),
        t.fail,
        t.warn,
        t.error,
        t.pass
    );
    let _ = writeln!(out, "## By policy\n");
    let _ = writeln!(
        out,
        "| policy | severity | category | controls | fail | warn | error | pass |"
    );
    let _ = writeln!(out, "|---|---|---|---|---:|---:|---:|---:|");
    for policy in &report.policies {
        let c = report.counts(&policy.name);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&policy.name),
            policy.severity.as_str(),
            cell(&policy.category),
            cell(&policy.controls.join(", ")),
            c.fail,
            c.warn,
            c.error,
            c.pass
        );
    }
    let _ = writeln!(out, "\n## By namespace\n");
    let _ = writeln!(out, "| namespace | fail | warn | error | pass |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (namespace, c) in &report.summary.by_namespace {
        let name = if namespace.is_empty() {
            "(cluster-scoped)"
        } else {
            namespace
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(name),
            c.fail,
            c.warn,
            c.error,
            c.pass
        );
    }
    let violations: Vec<_> = report.violations().collect();
    let _ = writeln!(out, "\n## Violations ({})\n", violations.len());
    if violations.is_empty() {
        let _ = writeln!(out, "None.");
        return out;
    }
    let _ = writeln!(
        out,
        "| result | object | policy | severity | controls | message |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (object, finding) in violations.iter().take(MAX_ROWS) {
        let policy = report.policy(&finding.policy);
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} |",
            finding.result.as_str(),
            cell(&object.reference()),
            cell(&finding.policy),
            policy.map_or("", |p| p.severity.as_str()),
            cell(&policy.map(|p| p.controls.join(", ")).unwrap_or_default()),
            cell(finding.message.as_deref().unwrap_or(""))
        );
    }
    if violations.len() > MAX_ROWS {
        let _ = writeln!(
            out,
            "\n…and {} more (the JSON and HTML reports list them all).",
            violations.len() - MAX_ROWS
        );
    }
    out
}
