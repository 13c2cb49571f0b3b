//! Profiles trimmed for a model's context: the figures that help write a query (types,
//! completeness, distinct counts, ranges, the most common values, alerts), without
//! histograms, sample rows and the long tail of values.
//!
//! Works on the profile API's JSON (`{schema, table, computed_at, stale, profile: {…}}` or
//! the bare `profile` object), so the server and the laptop trim the same way.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// Most frequent values kept per column.
pub const TOP_VALUES: usize = 5;
/// Sample values kept per column.
pub const SAMPLES: usize = 3;

fn body(profile: &Value) -> &Value {
    profile.get("profile").unwrap_or(profile)
}

fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k)
            && !v.is_null()
        {
            to.insert((*k).to_string(), v.clone());
        }
    }
}

fn round(v: &Value) -> Value {
    match v.as_f64() {
        Some(f) if v.is_f64() => json!((f * 100.0).round() / 100.0),
        _ => v.clone(),
    }
}

/// One column, trimmed.
fn trim_column(c: &Value) -> Value {
    let mut out = Map::new();
    copy(
        c,
        &mut out,
        &["name", "data_type", "type_category", "is_primary_key"],
    );
    for k in [
        "completeness_pct",
        "unique_count",
        "unique_pct",
        "null_count",
    ] {
        if let Some(v) = c.get(k) {
            out.insert(k.into(), round(v));
        }
    }
    if let Some(s) = c.get("sample_values").and_then(Value::as_array) {
        out.insert(
            "sample_values".into(),
            Value::Array(s.iter().take(SAMPLES).cloned().collect()),
        );
    }
    if let Some(n) = c.get("numeric_stats").filter(|v| v.is_object()) {
        let mut stats = Map::new();
        for k in [
            "min",
            "max",
            "mean",
            "median",
            "stddev",
            "zeros_pct",
            "negative_pct",
        ] {
            if let Some(v) = n.get(k).filter(|v| !v.is_null()) {
                stats.insert(k.into(), round(v));
            }
        }
        out.insert("numeric_stats".into(), Value::Object(stats));
    }
    if let Some(s) = c.get("string_stats").filter(|v| v.is_object()) {
        let mut stats = Map::new();
        copy(s, &mut stats, &["min_length", "max_length"]);
        if let Some(top) = s.get("top_values").and_then(Value::as_array) {
            stats.insert(
                "top_values".into(),
                Value::Array(top.iter().take(TOP_VALUES).cloned().collect()),
            );
        }
        out.insert("string_stats".into(), Value::Object(stats));
    }
    if let Some(d) = c.get("date_stats").filter(|v| v.is_object()) {
        let mut stats = Map::new();
        copy(d, &mut stats, &["earliest", "latest", "span_days"]);
        out.insert("date_stats".into(), Value::Object(stats));
    }
    if let Some(b) = c.get("boolean_stats").filter(|v| v.is_object()) {
        let mut stats = Map::new();
        copy(b, &mut stats, &["true_count", "false_count", "true_pct"]);
        out.insert("boolean_stats".into(), Value::Object(stats));
    }
    if let Some(a) = c.get("alerts").and_then(Value::as_array)
        && !a.is_empty()
    {
        out.insert(
            "alerts".into(),
            Value::Array(a.iter().filter_map(|a| a.get("message").cloned()).collect()),
        );
    }
    Value::Object(out)
}

/// The profile without what a model does not need.
pub fn trim(profile: &Value) -> Value {
    let p = body(profile);
    let mut out = Map::new();
    copy(
        profile,
        &mut out,
        &["schema", "table", "stale", "restricted", "error"],
    );
    if let Some(at) = profile.get("computed_at") {
        out.insert("computed_at".into(), at.clone());
    }
    copy(
        p,
        &mut out,
        &[
            "table_id",
            "row_count",
            "column_count",
            "duplicate_rows",
            "missing_cells_pct",
            "date_range",
        ],
    );
    if let Some(v) = p.get("avg_completeness") {
        out.insert("avg_completeness".into(), round(v));
    }
    if let Some(a) = p.get("alerts").and_then(Value::as_array) {
        out.insert(
            "alerts".into(),
            Value::Array(
                a.iter()
                    .map(|a| {
                        json!({
                            "column": a.get("column").cloned().unwrap_or(Value::Null),
                            "type": a.get("type").or_else(|| a.get("kind")).cloned().unwrap_or(Value::Null),
                            "message": a.get("message").cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect(),
            ),
        );
    }
    if let Some(columns) = p.get("columns").and_then(Value::as_array) {
        out.insert(
            "columns".into(),
            Value::Array(columns.iter().map(trim_column).collect()),
        );
    }
    Value::Object(out)
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => {
            let r = (f * 100.0).round() / 100.0;
            if r.fract() == 0.0 && r.abs() < 1e15 {
                format!("{}", r as i64)
            } else {
                format!("{r}")
            }
        }
        _ => match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// A column's profile in a short phrase (for a column table): completeness, distinct values,
/// range or most common values.
pub fn column_summary(c: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(v) = c.get("completeness_pct").filter(|v| v.is_number()) {
        parts.push(format!("{}% filled", num(v)));
    }
    if let Some(v) = c.get("unique_count").filter(|v| v.is_number()) {
        parts.push(format!("{} distinct", num(v)));
    }
    if let Some(n) = c.get("numeric_stats").filter(|v| v.is_object()) {
        if let (Some(lo), Some(hi)) = (n.get("min"), n.get("max"))
            && !lo.is_null()
            && !hi.is_null()
        {
            parts.push(format!("{} to {}", num(lo), num(hi)));
        }
    } else if let Some(d) = c.get("date_stats").filter(|v| v.is_object()) {
        if let (Some(lo), Some(hi)) = (
            d.get("earliest").and_then(Value::as_str),
            d.get("latest").and_then(Value::as_str),
        ) {
            parts.push(format!("{lo} to {hi}"));
        }
    } else if let Some(top) = c
        .get("string_stats")
        .and_then(|s| s.get("top_values"))
        .and_then(Value::as_array)
    {
        let values: Vec<String> = top
            .iter()
            .take(3)
            .filter_map(|t| t.get("value").and_then(Value::as_str))
            .map(|v| format!("'{}'", v.chars().take(30).collect::<String>()))
            .collect();
        if !values.is_empty() {
            parts.push(format!("top {}", values.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The profile's highlights and alerts as Markdown lines.
pub fn highlights(profile: &Value) -> String {
    let p = body(profile);
    let mut out = String::new();
    let mut facts = Vec::new();
    if let Some(v) = p.get("row_count") {
        facts.push(format!("{} rows", num(v)));
    }
    if let Some(v) = p.get("avg_completeness") {
        facts.push(format!("{}% complete on average", num(v)));
    }
    if let Some(v) = p
        .get("duplicate_rows")
        .filter(|v| v.as_u64().unwrap_or(0) > 0)
    {
        facts.push(format!("{} duplicate rows", num(v)));
    }
    if let Some(r) = p.get("date_range").filter(|v| v.is_object())
        && let (Some(lo), Some(hi)) = (
            r.get("earliest").and_then(Value::as_str),
            r.get("latest").and_then(Value::as_str),
        )
    {
        facts.push(format!("dates from {lo} to {hi}"));
    }
    if let Some(at) = profile.get("computed_at") {
        let when = at
            .as_i64()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| num(at));
        facts.push(format!("profiled {when}"));
    }
    if profile.get("stale").and_then(Value::as_bool) == Some(true) {
        facts.push("stale: the table changed since".into());
    }
    let _ = writeln!(out, "{}.", facts.join(", "));
    let alerts = p
        .get("alerts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if alerts.is_empty() {
        let _ = writeln!(out, "\nNo alerts.");
    } else {
        let _ = writeln!(out, "\nAlerts:");
        for a in alerts {
            let column = a.get("column").and_then(Value::as_str).unwrap_or("");
            let message = a.get("message").and_then(Value::as_str).unwrap_or("");
            let _ = writeln!(out, "- {column}: {message}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_the_useful_figures() {
        let served = json!({
            "schema": "s", "table": "t", "computed_at": 1700000000, "stale": false,
            "profile": {
                "row_count": 10, "column_count": 1, "avg_completeness": 99.5678,
                "alerts": [{"column": "c", "type": "HIGH_CARDINALITY", "message": "c is unique"}],
                "sample_rows": [{"c": "x"}],
                "columns": [{
                    "name": "c", "data_type": "Utf8", "completeness_pct": 100.0,
                    "unique_count": 10, "sample_values": ["a", "b", "c", "d"],
                    "string_stats": {"min_length": 1, "max_length": 3,
                        "top_values": [{"value": "a", "count": 3, "pct": 30.0},
                                       {"value": "b"}, {"value": "c"}, {"value": "d"},
                                       {"value": "e"}, {"value": "f"}]},
                    "numeric_stats": null
                }]
            }
        });
        let t = trim(&served);
        assert_eq!(t["avg_completeness"], json!(99.57));
        assert!(t.get("sample_rows").is_none());
        assert_eq!(
            t["columns"][0]["sample_values"].as_array().unwrap().len(),
            3
        );
        assert_eq!(
            t["columns"][0]["string_stats"]["top_values"]
                .as_array()
                .unwrap()
                .len(),
            TOP_VALUES
        );
        assert_eq!(t["alerts"][0]["type"], "HIGH_CARDINALITY");
        let summary = column_summary(&t["columns"][0]).unwrap();
        assert_eq!(summary, "100% filled; 10 distinct; top 'a', 'b', 'c'");
        assert!(highlights(&served).contains("- c: c is unique"));
    }
}
