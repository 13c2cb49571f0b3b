//! Atlassian Document Format (the JSON tree Jira Cloud's REST API v3 uses for descriptions
//! and comments) as plain text: paragraphs and list items on their own lines, lists marked
//! `- ` and `1. `, quotes `> `, table rows with ` | ` between cells, mentions as their
//! display text; marks (bold, links, …) dropped.

use serde_json::Value;

/// The plain text of an ADF value: `None` for null; a string is already text.
///
/// ```
/// use dataport_connectors::jira::adf::to_text;
/// use serde_json::json;
///
/// let doc = json!({"type": "doc", "version": 1, "content": [
///     {"type": "paragraph", "content": [
///         {"type": "text", "text": "Hi "},
///         {"type": "mention", "attrs": {"id": "5b10", "text": "@Ana Novak"}},
///         {"type": "text", "text": ", see", "marks": [{"type": "strong"}]}]},
///     {"type": "bulletList", "content": [
///         {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "one"}]}]},
///         {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "two"}]}]}]}
/// ]});
/// assert_eq!(to_text(&doc).as_deref(), Some("Hi @Ana Novak, see\n- one\n- two"));
/// ```
pub fn to_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        node => Some(block(node).trim_end().to_string()),
    }
}

fn kind(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

fn children(node: &Value) -> &[Value] {
    node.get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn attr<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("attrs").and_then(|a| a.get(name))
}

fn attr_str<'a>(node: &'a Value, name: &str) -> Option<&'a str> {
    attr(node, name).and_then(Value::as_str)
}

/// Blocks rendered and joined by `sep`, empty ones left out.
fn join(nodes: &[Value], sep: &str) -> String {
    nodes
        .iter()
        .map(block)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(sep)
}

/// A node as text (a block's lines, or an inline node's text).
fn block(node: &Value) -> String {
    match kind(node) {
        "paragraph" | "heading" => inline(children(node)),
        "text" => node
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        "bulletList" => list(node, |_| "- ".to_string()),
        "orderedList" => {
            let start = attr(node, "order").and_then(Value::as_i64).unwrap_or(1);
            list(node, |i| format!("{}. ", start + i as i64))
        }
        "codeBlock" => inline(children(node)),
        "blockquote" => join(children(node), "\n")
            .lines()
            .map(|l| format!("> {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        "rule" => "---".into(),
        "table" => children(node)
            .iter()
            .map(|row| {
                children(row)
                    .iter()
                    .map(|cell| join(children(cell), " "))
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        "media" => attr_str(node, "alt").unwrap_or_default().to_string(),
        "hardBreak" | "mention" | "emoji" | "inlineCard" | "blockCard" | "date" | "status" => {
            inline(std::slice::from_ref(node))
        }
        _ if !children(node).is_empty() => join(children(node), "\n"),
        _ => node
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }
}

/// A list: each item's blocks joined by newlines, the first line marked, nested lists
/// indented two spaces.
fn list(node: &Value, marker: impl Fn(usize) -> String) -> String {
    let mut lines = Vec::new();
    for (i, item) in children(node).iter().enumerate() {
        let mut first = true;
        let mut text = String::new();
        for child in children(item) {
            let rendered = block(child);
            if rendered.is_empty() {
                continue;
            }
            let nested = matches!(kind(child), "bulletList" | "orderedList");
            let rendered = if nested { indent(&rendered) } else { rendered };
            if !text.is_empty() {
                text.push('\n');
            }
            if first && !nested {
                text.push_str(&marker(i));
            }
            first = false;
            text.push_str(&rendered);
        }
        if text.is_empty() {
            text = marker(i).trim_end().to_string();
        }
        lines.push(text);
    }
    lines.join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Inline nodes concatenated.
fn inline(nodes: &[Value]) -> String {
    let mut out = String::new();
    for n in nodes {
        match kind(n) {
            "hardBreak" => out.push('\n'),
            "mention" => match attr_str(n, "text") {
                Some(t) => out.push_str(t),
                None => {
                    out.push('@');
                    out.push_str(attr_str(n, "id").unwrap_or_default());
                }
            },
            "emoji" => out.push_str(
                attr_str(n, "text")
                    .or_else(|| attr_str(n, "shortName"))
                    .unwrap_or_default(),
            ),
            "inlineCard" | "blockCard" => out.push_str(attr_str(n, "url").unwrap_or_default()),
            "date" => out.push_str(&date(attr(n, "timestamp"))),
            "status" => out.push_str(attr_str(n, "text").unwrap_or_default()),
            _ => out.push_str(&block(n)),
        }
    }
    out
}

/// A `date` node's timestamp (ms, as a string or a number) as `YYYY-MM-DD` (UTC).
fn date(ts: Option<&Value>) -> String {
    let ms = match ts {
        Some(Value::String(s)) => s.parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::to_text;
    use serde_json::json;

    fn p(text: &str) -> serde_json::Value {
        json!({"type": "paragraph", "content": [{"type": "text", "text": text}]})
    }

    fn doc(content: serde_json::Value) -> serde_json::Value {
        json!({"type": "doc", "version": 1, "content": content})
    }

    fn item(content: serde_json::Value) -> serde_json::Value {
        json!({"type": "listItem", "content": content})
    }

    #[test]
    fn nested_and_ordered_lists() {
        let d = doc(
            json!([{"type": "orderedList", "attrs": {"order": 3}, "content": [
                item(json!([p("three"), {"type": "bulletList", "content": [item(json!([p("a")])), item(json!([p("b")]))]}])),
                item(json!([p("four")])),
            ]}]),
        );
        assert_eq!(to_text(&d).unwrap(), "3. three\n  - a\n  - b\n4. four");
    }

    #[test]
    fn quotes_code_tables_rules_and_empty_blocks() {
        let d = doc(json!([
            {"type": "blockquote", "content": [p("said"), p("twice")]},
            {"type": "paragraph", "content": []},
            {"type": "codeBlock", "attrs": {"language": "sql"}, "content": [{"type": "text", "text": "SELECT 1;\nSELECT 2;"}]},
            {"type": "rule"},
            {"type": "table", "content": [
                {"type": "tableRow", "content": [
                    {"type": "tableHeader", "content": [p("k")]}, {"type": "tableHeader", "content": [p("v")]}]},
                {"type": "tableRow", "content": [
                    {"type": "tableCell", "content": [p("a")]}, {"type": "tableCell", "content": [p("1"), p("2")]}]}]},
            {"type": "mediaSingle", "content": [{"type": "media", "attrs": {"id": "x", "type": "file"}}]},
            {"type": "mediaSingle", "content": [{"type": "media", "attrs": {"id": "y", "alt": "screenshot.png"}}]},
        ]));
        assert_eq!(
            to_text(&d).unwrap(),
            "> said\n> twice\nSELECT 1;\nSELECT 2;\n---\nk | v\na | 1 2\nscreenshot.png"
        );
    }

    #[test]
    fn inline_nodes() {
        let d = doc(json!([{"type": "paragraph", "content": [
            {"type": "text", "text": "see", "marks": [{"type": "link", "attrs": {"href": "https://x"}}]},
            {"type": "hardBreak"},
            {"type": "emoji", "attrs": {"shortName": ":smile:"}},
            {"type": "text", "text": " "},
            {"type": "mention", "attrs": {"id": "557058:abc"}},
            {"type": "text", "text": " "},
            {"type": "inlineCard", "attrs": {"url": "https://example.com/a"}},
            {"type": "text", "text": " "},
            {"type": "date", "attrs": {"timestamp": "1709251200000"}},
            {"type": "text", "text": " "},
            {"type": "status", "attrs": {"text": "IN PROGRESS", "color": "blue"}},
        ]}]));
        assert_eq!(
            to_text(&d).unwrap(),
            "see\n:smile: @557058:abc https://example.com/a 2024-03-01 IN PROGRESS"
        );
    }

    #[test]
    fn null_string_and_empty() {
        assert_eq!(to_text(&json!(null)), None);
        assert_eq!(to_text(&json!("plain")).as_deref(), Some("plain"));
        assert_eq!(to_text(&doc(json!([]))).as_deref(), Some(""));
    }
}
