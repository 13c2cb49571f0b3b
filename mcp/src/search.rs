//! `search_catalog`: tables and columns ranked by the words of a question.

use serde::Serialize;

use crate::model::{MetricInfo, TableInfo};

/// A table that matched, with the columns that did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogHit {
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Columns whose name or description matched.
    pub columns: Vec<String>,
    /// Metrics on the table that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    pub score: f64,
}

/// Lower-case words of two or more letters or digits; a trailing plural `s` is dropped so
/// "customers" finds `customer`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(|w| {
            let w = w.to_lowercase();
            match w.strip_suffix('s') {
                Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
                _ => w,
            }
        })
        .collect()
}

const STOP: &[&str] = &[
    "the", "of", "and", "or", "in", "on", "to", "for", "by", "with", "what", "which", "who", "how",
    "many", "much", "is", "are", "per", "each", "has", "have", "most", "all", "do", "does", "from",
    "table", "tables", "data", "column", "columns",
];

fn matches(term: &str, text_words: &[String]) -> bool {
    text_words
        .iter()
        .any(|w| w == term || (term.len() >= 4 && w.contains(term)))
}

/// Tables matching `query`, best first, at most `limit`.
pub fn search(
    query: &str,
    tables: &[TableInfo],
    metrics: &[MetricInfo],
    limit: usize,
) -> Vec<CatalogHit> {
    let terms: Vec<String> = words(query)
        .into_iter()
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect();
    if terms.is_empty() {
        return Vec::new();
    }
    let mut hits: Vec<CatalogHit> = tables
        .iter()
        .filter_map(|t| {
            let mut score = 0.0;
            let name_words = words(&format!("{} {}", t.schema, t.name.replace('_', " ")));
            let description = words(t.description.as_deref().unwrap_or(""));
            let mut columns = Vec::new();
            for term in &terms {
                if matches(term, &name_words) {
                    score += 5.0;
                }
                if matches(term, &description) {
                    score += 1.5;
                }
            }
            for c in &t.columns {
                let name = words(&c.name.replace('_', " "));
                let text = words(c.description.as_deref().unwrap_or(""));
                let mut s = 0.0;
                for term in &terms {
                    if matches(term, &name) {
                        s += 2.0;
                    }
                    if matches(term, &text) {
                        s += 1.0;
                    }
                }
                if s > 0.0 {
                    score += s;
                    columns.push(c.name.clone());
                }
            }
            let table = t.qualified();
            let mut found_metrics = Vec::new();
            for m in metrics
                .iter()
                .filter(|m| m.table.eq_ignore_ascii_case(&table))
            {
                let text = words(&format!("{} {}", m.name.replace('_', " "), m.description));
                if terms.iter().any(|term| matches(term, &text)) {
                    score += 2.0;
                    found_metrics.push(m.name.clone());
                }
            }
            (score > 0.0).then(|| CatalogHit {
                table,
                description: t.description.clone(),
                columns,
                metrics: found_metrics,
                score,
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.table.cmp(&b.table))
    });
    hits.truncate(limit);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ColumnInfo;

    fn t(schema: &str, name: &str, columns: &[&str], description: &str) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            description: Some(description.into()),
            row_count: None,
            updated_at: None,
            columns: columns
                .iter()
                .map(|c| ColumnInfo {
                    name: (*c).into(),
                    data_type: "Utf8".into(),
                    nullable: true,
                    description: None,
                })
                .collect(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            partition_columns: Vec::new(),
            profile: None,
        }
    }

    #[test]
    fn a_question_finds_its_tables() {
        let tables = vec![
            t(
                "tpch",
                "customer",
                &["c_custkey", "c_nationkey"],
                "Customers of the shop",
            ),
            t("tpch", "nation", &["n_nationkey", "n_name"], "Nations"),
            t("tpch", "part", &["p_partkey"], "Parts"),
        ];
        let hits = search("Which nation has the most customers?", &tables, &[], 10);
        let names: Vec<&str> = hits.iter().map(|h| h.table.as_str()).collect();
        assert_eq!(names.len(), 2, "{hits:?}");
        assert!(names.contains(&"tpch.customer") && names.contains(&"tpch.nation"));
        assert!(search("the of", &tables, &[], 10).is_empty());
    }
}
