//! How a notification becomes Telegram messages: `*title*\nmessage` in Telegram's (legacy)
//! Markdown, cut into messages of at most 4096 characters and captions of at most 1024, at
//! line or word ends where there are any. Telegram counts UTF-16 code units.

/// Longest text message.
pub const MESSAGE_LIMIT: usize = 4096;
/// Longest photo caption.
pub const CAPTION_LIMIT: usize = 1024;

/// `text` with the characters that legacy Markdown reads as markup escaped.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '_' | '*' | '`' | '[') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `title` in bold, read literally. Inside a bold span legacy Markdown takes every character
/// as it is up to the next `*` (a backslash there is shown, not an escape), so only a `*` needs
/// care: the bold closes before it, the star goes escaped outside, and the bold reopens.
pub fn bold(title: &str) -> String {
    title
        .split('*')
        .map(|part| {
            if part.is_empty() {
                String::new()
            } else {
                format!("*{part}*")
            }
        })
        .collect::<Vec<_>>()
        .join("\\*")
}

/// The Markdown text of a notification: the title in bold (always literal), then the
/// script's message as it wrote it.
pub fn markdown(title: &str, message: &str) -> String {
    if message.is_empty() {
        bold(title)
    } else {
        format!("{}\n{message}", bold(title))
    }
}

/// The same with the message taken literally (every markup character escaped), for when
/// Telegram cannot parse the script's Markdown (a lone `_` in `region_1`): the title stays
/// bold and the message reads as written.
pub fn literal(title: &str, message: &str) -> String {
    markdown(title, &escape_markdown(message))
}

fn units(c: char) -> usize {
    c.len_utf16()
}

/// Length as Telegram counts it.
pub fn telegram_len(text: &str) -> usize {
    text.chars().map(units).sum()
}

/// The longest prefix of `text` (a char boundary) within `limit` units, moved back to just
/// after the last newline or space in its second half when there is one.
fn cut_point(text: &str, limit: usize) -> usize {
    let mut used = 0;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        if used + units(c) > limit {
            end = i;
            break;
        }
        used += units(c);
    }
    if end == text.len() {
        return end;
    }
    let head = &text[..end];
    let half = end / 2;
    if let Some(nl) = head.rfind('\n').filter(|&i| i >= half) {
        return nl + 1;
    }
    if let Some(sp) = head.rfind(' ').filter(|&i| i >= half) {
        return sp + 1;
    }
    end.max(text.chars().next().map_or(0, char::len_utf8))
}

/// `text` cut into messages of at most `limit` units (trailing separators dropped).
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let at = cut_point(rest, limit);
        let part = rest[..at].trim_end_matches(['\n', ' ']);
        if !part.is_empty() {
            parts.push(part.to_string());
        }
        rest = &rest[at..];
    }
    parts
}

/// A caption of at most `limit` units: `text` itself, or cut at a line or word end with `…`
/// (then `true`: the caller sends the whole text after the photo).
pub fn caption(text: &str, limit: usize) -> (String, bool) {
    if telegram_len(text) <= limit {
        return (text.to_string(), false);
    }
    let at = cut_point(text, limit.saturating_sub(1));
    let mut cut = text[..at].trim_end_matches(['\n', ' ']).to_string();
    cut.push('…');
    (cut, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_literal() {
        assert_eq!(markdown("cpu_load [x]", "x_y"), "*cpu_load [x]*\nx_y");
        assert_eq!(
            markdown("5 *critical* alerts", ""),
            "*5 *\\**critical*\\** alerts*"
        );
        assert_eq!(bold("*x*"), "\\**x*\\*");
        assert_eq!(markdown("t", ""), "*t*");
        assert_eq!(literal("t", "a_b *c*"), "*t*\na\\_b \\*c\\*");
    }

    #[test]
    fn long_text_splits_at_line_ends() {
        let line = "x".repeat(100);
        let text = vec![line.as_str(); 100].join("\n");
        let parts = split(&text, MESSAGE_LIMIT);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| telegram_len(p) <= MESSAGE_LIMIT));
        assert!(parts.iter().all(|p| p.split('\n').all(|l| l == line)));
        assert_eq!(parts.join("\n"), text);
    }

    #[test]
    fn no_separator_cuts_hard_on_char_boundaries() {
        let text = "é".repeat(5000);
        let parts = split(&text, MESSAGE_LIMIT);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), MESSAGE_LIMIT);
        // An emoji is two UTF-16 units.
        let emoji = "😀".repeat(3000);
        let parts = split(&emoji, MESSAGE_LIMIT);
        assert!(parts.iter().all(|p| telegram_len(p) <= MESSAGE_LIMIT));
        assert_eq!(parts.concat(), emoji);
    }

    #[test]
    fn captions_end_cleanly() {
        let (c, cut) = caption("short", CAPTION_LIMIT);
        assert_eq!((c.as_str(), cut), ("short", false));
        let words = "word ".repeat(400);
        let (c, cut) = caption(&words, CAPTION_LIMIT);
        assert!(cut && telegram_len(&c) <= CAPTION_LIMIT);
        assert!(c.ends_with("word…"), "{c}");
    }
}
