//! One self-contained HTML file an auditor can open and forward: totals per
//! policy, namespace and severity with inline SVG charts, every violation in
//! a table with its object, policy, controls and message, and filters that
//! run in the page (no server, no external asset).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::escape;
use crate::audit::report::{Counts, Outcome, Report, timestamp};

fn color(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "#2e7d32",
        Outcome::Fail => "#c62828",
        Outcome::Warn => "#ef8f00",
        Outcome::Error => "#6a1b9a",
    }
}

/// Namespaces shown in the namespace chart: the ones with the most
/// violations.
const CHART_ROWS: usize = 20;

/// A horizontal stacked bar chart: one row per label, segments per outcome.
fn chart(title: &str, rows: &[(String, Counts)]) -> String {
    let row_height = 22;
    let label_width = 220;
    let bar_width = 460;
    let height = 30 + rows.len() * row_height + 24;
    let max = rows
        .iter()
        .map(|(_, c)| c.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {} {height}\" width=\"100%\">\
         <text x=\"0\" y=\"16\" class=\"chart-title\">{}</text>",
        escape(title),
        label_width + bar_width + 130,
        escape(title)
    );
    for (i, (label, counts)) in rows.iter().enumerate() {
        let y = 30 + i * row_height;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"chart-label\">{}</text>",
            label_width - 8,
            y + 14,
            escape(label)
        );
        let mut x = label_width as f64;
        for outcome in Outcome::ALL {
            let n = counts.get(outcome);
            if n == 0 {
                continue;
            }
            let width = n as f64 / max as f64 * bar_width as f64;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{width:.1}\" height=\"{}\" fill=\"{}\"><title>{}: {n} {}</title></rect>",
                row_height - 6,
                color(outcome),
                escape(label),
                outcome.as_str()
            );
            x += width;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"chart-label\">{} / {}</text>",
            x + 6.0,
            y + 14,
            counts.fail + counts.warn + counts.error,
            counts.total()
        );
    }
    let legend_y = 30 + rows.len() * row_height + 12;
    for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
        let x = label_width + i * 90;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"chart-label\">{}</text>",
            legend_y - 9,
            color(outcome),
            x + 14,
            legend_y,
            outcome.as_str()
        );
    }
    svg.push_str("</svg>");
    svg
}

fn select(id: &str, label: &str, values: &BTreeSet<String>) -> String {
    let mut html = format!("<label>{label} <select id=\"{id}\"><option value=\"\">all</option>");
    for value in values {
        let _ = write!(html, "<option>{}</option>", escape(value));
    }
    html.push_str("</select></label>");
    html
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#1d1d1f;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}.meta{color:#555}
.cards{display:flex;gap:12px;margin:16px 0}.card{flex:1;border-radius:8px;padding:12px 16px;color:#fff}
.card b{display:block;font-size:28px}.charts{display:grid;grid-template-columns:1fr;gap:16px}
.chart-title{font-weight:600;font-size:14px}.chart-label{font-size:12px;fill:#333}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e3e3e3;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}td.num,th.num{text-align:right}
.result{font-weight:600;text-transform:uppercase;font-size:11px}.filters{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0;align-items:center}
.filters input{padding:4px 8px;min-width:240px}code{font-size:12px}";

const SCRIPT: &str = "(function(){
var ids=['f-policy','f-namespace','f-severity','f-result'];
var keys=['policy','namespace','severity','result'];
var search=document.getElementById('f-text');
var rows=Array.prototype.slice.call(document.querySelectorAll('#violations tbody tr'));
var shown=document.getElementById('shown');
function apply(){
  var wanted=ids.map(function(id){return document.getElementById(id).value;});
  var text=search.value.toLowerCase();var count=0;
  rows.forEach(function(row){
    var ok=keys.every(function(k,i){return !wanted[i]||row.dataset[k]===wanted[i];});
    if(ok&&text){ok=row.textContent.toLowerCase().indexOf(text)>=0;}
    row.style.display=ok?'':'none';if(ok){count++;}
  });
  shown.textContent=count;
}
ids.forEach(function(id){document.getElementById(id).addEventListener('change',apply);});
search.addEventListener('input',apply);apply();
})();";

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let summary = &report.summary;
    let mut html =
        String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        html,
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Tollgate audit report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        html,
        "<h1>Tollgate audit report</h1><p class=\"meta\">{} objects from {} · generated {}</p><div class=\"cards\">",
        summary.objects,
        escape(&report.source),
        timestamp(report.generated)
    );
    for outcome in Outcome::ALL {
        let _ = write!(
            html,
            "<div class=\"card\" style=\"background:{}\"><b>{}</b>{}</div>",
            color(outcome),
            summary.total.get(outcome),
            outcome.as_str()
        );
    }
    html.push_str("</div><h2>Totals</h2><div class=\"charts\">");
    let by_policy: Vec<(String, Counts)> = report
        .policies
        .iter()
        .map(|p| (p.name.clone(), report.counts(&p.name)))
        .collect();
    html.push_str(&chart("By policy", &by_policy));
    let by_severity: Vec<(String, Counts)> = summary
        .by_severity
        .iter()
        .rev()
        .map(|(s, c)| (s.as_str().to_owned(), *c))
        .collect();
    html.push_str(&chart("By severity", &by_severity));
    let mut by_namespace: Vec<(String, Counts)> = summary
        .by_namespace
        .iter()
        .map(|(n, c)| {
            (
                if n.is_empty() {
                    "(cluster-scoped)".to_owned()
                } else {
                    n.clone()
                },
                *c,
            )
        })
        .collect();
    by_namespace.sort_by(|a, b| {
        let bad = |c: &Counts| c.fail + c.warn + c.error;
        bad(&b.1).cmp(&bad(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    let hidden = by_namespace.len().saturating_sub(CHART_ROWS);
    by_namespace.truncate(CHART_ROWS);
    let title = if hidden > 0 {
        format!("By namespace (the {CHART_ROWS} with most violations; {hidden} more in the table)")
    } else {
        "By namespace".to_owned()
    };
    html.push_str(&chart(&title, &by_namespace));
    html.push_str("</div><h2>Policies</h2><table><thead><tr><th>policy</th><th>mode</th><th>severity</th><th>category</th><th>controls</th><th class=\"num\">fail</th><th class=\"num\">warn</th><th class=\"num\">error</th><th class=\"num\">pass</th></tr></thead><tbody>");
    for policy in &report.policies {
        let c = report.counts(&policy.name);
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&policy.name),
            escape(&policy.mode),
            policy.severity.as_str(),
            escape(&policy.category),
            escape(&policy.controls.join(", ")),
            c.fail,
            c.warn,
            c.error,
            c.pass
        );
    }
    html.push_str("</tbody></table>");
    let violations: Vec<_> = report.violations().collect();
    let mut values: [BTreeSet<String>; 4] = Default::default();
    for (object, finding) in &violations {
        values[0].insert(finding.policy.clone());
        values[1].insert(object.namespace.clone());
        if let Some(policy) = report.policy(&finding.policy) {
            values[2].insert(policy.severity.as_str().to_owned());
        }
        values[3].insert(finding.result.as_str().to_owned());
    }
    let _ = write!(
        html,
        "<h2>Violations (<span id=\"shown\">{}</span> of {})</h2><div class=\"filters\">{}{}{}{}<label>text <input id=\"f-text\" type=\"search\" placeholder=\"object, message, control…\"></label></div>",
        violations.len(),
        violations.len(),
        select("f-policy", "policy", &values[0]),
        select("f-namespace", "namespace", &values[1]),
        select("f-severity", "severity", &values[2]),
        select("f-result", "result", &values[3]),
    );
    html.push_str("<table id=\"violations\"><thead><tr><th>result</th><th>severity</th><th>object</th><th>policy</th><th>controls</th><th>message</th></tr></thead><tbody>");
    for (object, finding) in &violations {
        let policy = report.policy(&finding.policy);
        let severity = policy.map_or("", |p| p.severity.as_str());
        let _ = write!(
            html,
            "<tr data-policy=\"{}\" data-namespace=\"{}\" data-severity=\"{severity}\" data-result=\"{}\"><td class=\"result\" style=\"color:{}\">{}</td><td>{severity}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&finding.policy),
            escape(&object.namespace),
            finding.result.as_str(),
            color(finding.result),
            finding.result.as_str(),
            escape(&object.reference()),
            escape(&finding.policy),
            escape(&policy.map(|p| p.controls.join(", ")).unwrap_or_default()),
            escape(finding.message.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(
        html,
        "</tbody></table><script>{SCRIPT}</script></body></html>"
    );
    html
}
