//! Reading the shipped dashboards and alert rules: every PromQL expression in them, the metric
//! names those expressions use, and Grafana's variables replaced so Prometheus can run them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use e2e::repo_root;

pub fn dashboards_dir() -> PathBuf {
    repo_root().join("dashboards")
}

/// The dashboard files (asserted non-empty: a glob that matches nothing must not pass).
pub fn dashboard_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the three dashboards, found {v:?}");
    v
}

/// One expression and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Expr {
    pub origin: String,
    pub expr: String,
}

/// Every PromQL expression in a dashboard: panel targets (rows included) and query variables.
pub fn dashboard_exprs(path: &PathBuf) -> Vec<Expr> {
    let d: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(Expr {
                    origin: format!(
                        "{file}: panel {:?} {}",
                        p["title"].as_str().unwrap_or_default(),
                        t["refId"].as_str().unwrap_or_default()
                    ),
                    expr: e.to_string(),
                });
            }
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            // label_values(metric, label) names a metric like an expression does.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(m, _)| m.trim().to_string())
                .unwrap_or_else(|| q.to_string());
            out.push(Expr {
                origin: format!("{file}: variable {}", v["name"]),
                expr: inner,
            });
        }
    }
    out
}

/// Every `expr:` in a Prometheus rules file, single-line or block scalar (`|`, `>`).
pub fn rule_exprs(path: &PathBuf) -> Vec<Expr> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut alert = String::new();
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(a) = t.strip_prefix("- alert:").or(t.strip_prefix("- record:")) {
            alert = a.trim().to_string();
        }
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            let indent = l.len() - t.len();
            let expr = if rest == "|" || rest == ">" || rest == "|-" || rest == ">-" {
                let mut body = Vec::new();
                while i + 1 < lines.len() {
                    let n = lines[i + 1];
                    if !n.trim().is_empty() && n.len() - n.trim_start().len() <= indent {
                        break;
                    }
                    body.push(n.trim());
                    i += 1;
                }
                body.join(" ")
            } else {
                rest.trim_matches(|c| c == '\'' || c == '"').to_string()
            };
            out.push(Expr {
                origin: format!("{}: {alert}", path.file_name().unwrap().to_string_lossy()),
                expr,
            });
        }
        i += 1;
    }
    out
}

/// PromQL words that are not metric names when they stand alone.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    // aggregation operators, which may be followed by `by (...)` rather than `(`
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Metric names an expression selects: identifiers that are not functions, keywords, label
/// names (inside `{}` or grouping lists), strings, durations or Grafana variables.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                while i < b.len() && b[i] != close {
                    if b[i] == b'"' {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && ident(b[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                // numbers and durations such as 0.99, 5m, 1e3
                while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                let call = j < b.len() && b[j] == b'(';
                let lower = word.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                    && call
                {
                    // skip the label list
                    while i < b.len() && b[i] != b')' {
                        i += 1;
                    }
                    i += 1;
                } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Replaces Grafana's variables with values Prometheus accepts: ranges for the interval
/// macros, "match anything" for template variables (the dashboards use them with `=~`).
pub fn substitute(expr: &str, rate_interval: &str, range: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", range)
        .replace("$__interval", rate_interval);
    while let Some(i) = s.find('$') {
        let rest = &s[i + 1..];
        let len = if rest.starts_with('{') {
            rest.find('}').map(|e| e + 1).unwrap_or(rest.len())
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        s.replace_range(i..i + 1 + len, ".*");
    }
    s
}

#[test]
fn metric_name_extraction() {
    let e = r#"histogram_quantile(0.99, sum by (le, upstream) (rate(edge_upstream_request_duration_seconds_bucket{instance=~"$instance",x="a{b}"}[$__rate_interval]))) / on (node) group_left (region) max(gateway_node_info offset 5m) and up == 0 or vector(0)"#;
    let got: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        got,
        [
            "edge_upstream_request_duration_seconds_bucket",
            "gateway_node_info",
            "up"
        ]
    );
    assert_eq!(
        substitute(
            r#"rate(x{c=~"$chain",d=~"${node}"}[$__rate_interval])"#,
            "10s",
            "1m"
        ),
        r#"rate(x{c=~".*",d=~".*"}[10s])"#
    );
}
