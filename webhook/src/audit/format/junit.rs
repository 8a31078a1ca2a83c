//! JUnit XML: one test suite per policy, one test case per object × policy,
//! so CI systems show each violation as a failed test.

use std::fmt::Write;

use super::escape;
use crate::audit::report::{Outcome, Report};

/// The report as JUnit XML.
pub fn render(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let t = &report.summary.total;
    let _ = writeln!(
        out,
        "<testsuites name=\"tollgate audit\" tests=\"{}\" failures=\"{}\" errors=\"{}\" timestamp=\"{}\">",
        t.total(),
        t.fail,
        t.error,
        crate::audit::report::timestamp(report.generated)
    );
    for policy in &report.policies {
        let counts = report.counts(&policy.name);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\">",
            escape(&policy.name),
            counts.total(),
            counts.fail,
            counts.error
        );
        for object in &report.objects {
            for finding in object.findings.iter().filter(|f| f.policy == policy.name) {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\"",
                    escape(&policy.name),
                    escape(&object.reference())
                );
                let message = escape(finding.message.as_deref().unwrap_or(""));
                match finding.result {
                    Outcome::Pass => out.push_str("/>\n"),
                    Outcome::Fail => {
                        let _ = writeln!(
                            out,
                            "><failure type=\"{}\" message=\"{message}\">{message}</failure></testcase>",
                            policy.severity.as_str()
                        );
                    }
                    Outcome::Warn => {
                        // JUnit has no warnings: a passing case with its message.
                        let _ = writeln!(
                            out,
                            "><system-out>warning: {message}</system-out></testcase>"
                        );
                    }
                    Outcome::Error => {
                        let _ = writeln!(
                            out,
                            "><error message=\"{message}\">{message}</error></testcase>"
                        );
                    }
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
