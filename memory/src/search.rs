//! Full-text search over items that ranks: BM25 (k1 = 1.2, b = 0.75) over the title, tags and
//! content, the title's words counting three times and the tags' twice. Words are lower-case
//! runs of letters, digits and `_`; a dotted name (`orders.status`) is also its parts.

use std::collections::HashMap;

const K1: f64 = 1.2;
const B: f64 = 0.75;
const TITLE_WEIGHT: usize = 3;
const TAG_WEIGHT: usize = 2;

/// The words of `text`.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')) {
        let token = token.trim_matches('.').to_lowercase();
        if token.is_empty() {
            continue;
        }
        if token.contains('.') {
            out.extend(
                token
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
        }
        out.push(token);
    }
    out
}

/// A document to index: its id and fields.
#[derive(Debug, Clone)]
pub struct Doc<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub tags: &'a [String],
    pub content: &'a str,
}

/// An index of documents, built per search (the items of one server fit in memory).
#[derive(Debug)]
pub struct Index {
    ids: Vec<String>,
    terms: Vec<HashMap<String, usize>>,
    lengths: Vec<usize>,
    document_frequency: HashMap<String, usize>,
    average_length: f64,
}

impl Index {
    pub fn new(docs: &[Doc<'_>]) -> Self {
        let mut ids = Vec::with_capacity(docs.len());
        let mut terms = Vec::with_capacity(docs.len());
        let mut lengths = Vec::with_capacity(docs.len());
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        for d in docs {
            let mut counts: HashMap<String, usize> = HashMap::new();
            let mut length = 0;
            let mut add = |text: &str, weight: usize| {
                for w in words(text) {
                    *counts.entry(w).or_default() += weight;
                    length += weight;
                }
            };
            add(d.title, TITLE_WEIGHT);
            for tag in d.tags {
                add(tag, TAG_WEIGHT);
            }
            add(d.content, 1);
            for term in counts.keys() {
                *document_frequency.entry(term.clone()).or_default() += 1;
            }
            ids.push(d.id.to_string());
            terms.push(counts);
            lengths.push(length);
        }
        let average_length = if lengths.is_empty() {
            0.0
        } else {
            lengths.iter().sum::<usize>() as f64 / lengths.len() as f64
        };
        Self {
            ids,
            terms,
            lengths,
            document_frequency,
            average_length,
        }
    }

    /// The documents matching any word of `query`, best first (ties by id), with their scores.
    pub fn search(&self, query: &str) -> Vec<(String, f64)> {
        let mut query_words = words(query);
        query_words.sort();
        query_words.dedup();
        let n = self.ids.len() as f64;
        let mut hits: Vec<(String, f64)> = Vec::new();
        for (i, counts) in self.terms.iter().enumerate() {
            let mut score = 0.0;
            for w in &query_words {
                let Some(&tf) = counts.get(w) else {
                    continue;
                };
                let df = self.document_frequency.get(w).copied().unwrap_or(0) as f64;
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                let tf = tf as f64;
                let norm = 1.0 - B + B * self.lengths[i] as f64 / self.average_length.max(1.0);
                score += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
            }
            if score > 0.0 {
                hits.push((self.ids[i].clone(), score));
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_split_dotted_names() {
        assert_eq!(
            words("Use `orders.status`!"),
            ["use", "orders", "status", "orders.status"]
        );
        assert_eq!(words("revenue_net, Revenue."), ["revenue_net", "revenue"]);
    }

    #[test]
    fn the_title_outranks_the_content_and_rare_words_outrank_common_ones() {
        let (t1, t2, t3) = (tags(&["orders"]), tags(&[]), tags(&["refunds"]));
        let docs = [
            Doc {
                id: "km_a",
                title: "Refund status",
                tags: &t1,
                content: "orders.status 7 means refunded",
            },
            Doc {
                id: "km_b",
                title: "Revenue",
                tags: &t2,
                content: "refund handling is described elsewhere; revenue is net",
            },
            Doc {
                id: "km_c",
                title: "Shipping dates",
                tags: &t3,
                content: "use l_shipdate",
            },
        ];
        let index = Index::new(&docs);
        let hits = index.search("refund");
        assert_eq!(
            hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["km_a", "km_b"]
        );
        assert!(hits[0].1 > hits[1].1);
        assert_eq!(index.search("status")[0].0, "km_a");
        assert_eq!(index.search("refunds")[0].0, "km_c");
        assert!(index.search("nothing here").is_empty());
        assert!(Index::new(&[]).search("x").is_empty());
    }
}
