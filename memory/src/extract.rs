//! The offline extractor: a notes file's headings and bullet points become items, the same way
//! every time, so the feature works with no LLM configured.
//!
//! Each bullet (`-`, `*`, `+`, `1.`) with its continuation lines is one item, titled by its
//! first clause and filed under its heading; text under a heading that has no bullets is one
//! item titled by the heading. Lines marked `<!-- private -->`, and everything under a heading
//! that says `(private)`, produce items marked private: they are held for their author.

use crate::item::{Category, Item};

/// Longest title taken from a bullet.
const MAX_TITLE: usize = 80;
/// Tags per item.
const MAX_TAGS: usize = 8;

/// An item and whether its author marked its lines private.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub item: Item,
    pub private: bool,
}

struct Block {
    heading: String,
    heading_private: bool,
    text: Vec<String>,
    bullet: bool,
    private: bool,
}

/// The items of `notes`, in the order they appear (duplicates by id dropped).
pub fn extract_offline(notes: &str) -> Vec<Extracted> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut heading = String::new();
    let mut heading_private = false;
    let mut in_code = false;
    for raw in notes.lines() {
        let line = raw.trim_end();
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            if let Some(b) = blocks.last_mut().filter(|b| b.bullet) {
                b.text.push(line.trim().to_string());
            }
            continue;
        }
        if in_code {
            if let Some(b) = blocks.last_mut() {
                b.text.push(line.to_string());
            }
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(h) = heading_text(trimmed) {
            heading_private = h.to_ascii_lowercase().contains("(private)");
            heading = h
                .replace("(private)", "")
                .replace("(Private)", "")
                .trim()
                .to_string();
            continue;
        }
        let private_marker = trimmed.contains("<!-- private -->");
        let text = trimmed.replace("<!-- private -->", "").trim().to_string();
        if let Some(rest) = bullet_text(trimmed) {
            let rest = rest.replace("<!-- private -->", "").trim().to_string();
            blocks.push(Block {
                heading: heading.clone(),
                heading_private,
                text: vec![rest],
                bullet: true,
                private: private_marker,
            });
            continue;
        }
        if text.is_empty() {
            // A blank line ends a paragraph (a bullet may go on after it only indented).
            if let Some(b) = blocks.last_mut().filter(|b| !b.bullet) {
                b.text.push(String::new());
            }
            continue;
        }
        let continues_bullet = raw.starts_with([' ', '\t'])
            && blocks
                .last()
                .is_some_and(|b| b.bullet && b.heading == heading);
        match blocks.last_mut() {
            Some(b) if continues_bullet => {
                b.text.push(text);
                b.private |= private_marker;
            }
            Some(b) if !b.bullet && b.heading == heading => {
                b.text.push(text);
                b.private |= private_marker;
            }
            _ => blocks.push(Block {
                heading: heading.clone(),
                heading_private,
                text: vec![text],
                bullet: false,
                private: private_marker,
            }),
        }
    }
    let mut out: Vec<Extracted> = Vec::new();
    for b in blocks {
        let content = b.text.join("\n").trim().to_string();
        if content.is_empty() {
            continue;
        }
        let title = if b.bullet || b.heading.is_empty() {
            first_clause(&content)
        } else {
            b.heading.clone()
        };
        let category = categorize(&format!("{} {content}", b.heading));
        let tags = tags_of(&b.heading, &content);
        let item = Item::new(&title, &content, category, tags);
        if out.iter().any(|e| e.item.id == item.id) {
            continue;
        }
        out.push(Extracted {
            item,
            private: b.private || b.heading_private,
        });
    }
    out
}

fn heading_text(line: &str) -> Option<String> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    ((1..=6).contains(&hashes) && line[hashes..].starts_with(' ')).then(|| {
        line[hashes..]
            .trim()
            .trim_end_matches('#')
            .trim()
            .to_string()
    })
}

fn bullet_text(line: &str) -> Option<&str> {
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            let rest = rest
                .strip_prefix("[ ] ")
                .or_else(|| rest.strip_prefix("[x] "))
                .unwrap_or(rest);
            return Some(rest);
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &line[digits..];
        return rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") "));
    }
    None
}

/// The text up to the first `:`, ` — `, ` - ` or sentence end, at most [`MAX_TITLE`] characters
/// (cut at a word end), Markdown emphasis removed.
fn first_clause(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    let plain: String = first_line
        .chars()
        .filter(|c| !matches!(c, '*' | '`'))
        .collect();
    let mut end = plain.len();
    for sep in [": ", " — ", " – ", " - ", ". "] {
        if let Some(i) = plain.find(sep).filter(|&i| i > 0) {
            end = end.min(i);
        }
    }
    let clause = plain[..end].trim().trim_end_matches(['.', ':']);
    if clause.chars().count() <= MAX_TITLE {
        return clause.to_string();
    }
    let mut cut: String = clause.chars().take(MAX_TITLE).collect();
    if let Some(i) = cut.rfind(' ') {
        cut.truncate(i);
    }
    format!("{cut}…")
}

/// A category from words of the heading and text; `data_analysis` when none says otherwise.
fn categorize(text: &str) -> Category {
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let name = if has(&["api", "endpoint", "webhook", "token", "oauth", "rest "]) {
        "api_integration"
    } else if has(&[
        "slow",
        "performance",
        "faster",
        "index",
        "partition",
        "memory",
        "timeout",
    ]) {
        "performance"
    } else if has(&[
        "error",
        "bug",
        "debug",
        "fails",
        "broken",
        "workaround",
        "null",
    ]) {
        "debugging"
    } else if has(&[
        "server",
        "deploy",
        "pipeline",
        "cron",
        "infrastructure",
        "backup",
    ]) {
        "infrastructure"
    } else if has(&[
        "workflow",
        "process",
        "review",
        "before you",
        "always ",
        "never ",
    ]) {
        "workflow"
    } else if has(&[
        "revenue", "customer", "refund", "means", "status", "churn", "margin",
    ]) {
        "business_logic"
    } else {
        "data_analysis"
    };
    Category::known(name)
}

/// Code spans (`orders.status`) and the heading's words, lower-case, unique.
fn tags_of(heading: &str, content: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        if t.len() >= 2 && t.len() <= 40 && !tags.contains(&t) && tags.len() < MAX_TAGS {
            tags.push(t);
        }
    };
    for (i, part) in content.split('`').enumerate() {
        if i % 2 == 1 && !part.contains(' ') && !part.is_empty() {
            push(part);
        }
    }
    for word in heading.split(|c: char| !c.is_alphanumeric() && c != '_') {
        if word.len() > 3 {
            push(word);
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: &str = "\
# Orders

- `orders.status` 7 means refunded: exclude it from revenue.
- Use `revenue_net`, not `revenue` — the latter includes tax.
  It changed in 2024.

## Slow queries

Filter `lineitem` by `l_shipdate` first; the table is partitioned by month.

## Personal (private)

- My manager is Jo, phone +420 777 123 456

- API tokens live in the vault <!-- private -->
```sql
select 1
```
";

    #[test]
    fn headings_and_bullets_become_items() {
        let items = extract_offline(NOTES);
        let titles: Vec<&str> = items.iter().map(|e| e.item.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "orders.status 7 means refunded",
                "Use revenue_net, not revenue",
                "Slow queries",
                "My manager is Jo, phone +420 777 123 456",
                "API tokens live in the vault",
            ]
        );
        assert_eq!(
            items[1].item.content,
            "Use `revenue_net`, not `revenue` — the latter includes tax.\nIt changed in 2024."
        );
        assert_eq!(items[0].item.category.as_str(), "business_logic");
        assert_eq!(items[2].item.category.as_str(), "performance");
        assert_eq!(items[0].item.tags, ["orders.status", "orders"]);
        assert!(!items[0].private && !items[2].private);
        assert!(items[3].private && items[4].private);
        assert!(items[4].item.content.contains("select 1"));
    }

    #[test]
    fn the_same_notes_give_the_same_items() {
        assert_eq!(extract_offline(NOTES), extract_offline(NOTES));
        assert!(extract_offline("").is_empty());
        let twice = extract_offline("- a thing\n- a thing\n");
        assert_eq!(twice.len(), 1);
    }

    #[test]
    fn long_first_clauses_are_cut_at_a_word() {
        let long = format!("- {}", "word ".repeat(40));
        let [e] = extract_offline(&long)
            .try_into()
            .unwrap_or_else(|_| panic!("one item"));
        assert!(e.item.title.ends_with('…') && e.item.title.chars().count() <= MAX_TITLE + 1);
    }
}
