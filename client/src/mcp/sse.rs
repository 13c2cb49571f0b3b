//! Server-sent events as the Streamable HTTP transport answers a request with them: `data:`
//! lines joined into one event per blank line, read as the bytes arrive.

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `event:`, when it names one (MCP's are all `message`, the default).
    pub(crate) event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub(crate) data: String,
    /// `id:`, for resuming a stream (not used here: a broken stream falls back instead).
    pub(crate) id: Option<String>,
}

/// Reads events out of a byte stream fed in pieces of any size.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The lines so far of the event being read.
    data: Vec<String>,
    event: Option<String>,
    id: Option<String>,
    /// Whether the stream's first line (where a byte-order mark may be) was read.
    started: bool,
}

impl Parser {
    /// The events completed by `bytes`.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = self.without_bom(&line);
                if let Some(e) = self.line_done(&String::from_utf8_lossy(line)) {
                    events.push(e);
                }
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// The last event, when the stream ended without the blank line after it.
    pub(crate) fn finish(&mut self) -> Option<Event> {
        let rest = std::mem::take(&mut self.line);
        let mut event = None;
        if !rest.is_empty() {
            let rest = self.without_bom(&rest);
            event = self.line_done(String::from_utf8_lossy(rest).trim_end_matches('\r'));
        }
        event.or_else(|| self.line_done(""))
    }

    /// `line` without the byte-order mark a stream may start with.
    fn without_bom<'a>(&mut self, line: &'a [u8]) -> &'a [u8] {
        if std::mem::replace(&mut self.started, true) {
            return line;
        }
        line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
    }

    fn line_done(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(Event { event, data, id });
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut events: Vec<Event> = chunks.iter().flat_map(|c| p.feed(c)).collect();
        events.extend(p.finish());
        events
    }

    #[test]
    fn events_are_split_on_blank_lines_in_any_chunking() {
        let stream = b"\xEF\xBB\xBFevent: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: {\"b\":\ndata: 2}\n\n";
        let expected = vec![
            Event {
                event: Some("message".into()),
                data: "{\"a\":1}".into(),
                id: Some("1".into()),
            },
            Event {
                event: None,
                data: "{\"b\":\n2}".into(),
                id: None,
            },
        ];
        assert_eq!(all(&[stream]), expected);
        // One byte at a time, including the CR LF and the byte-order mark split up.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), expected);
    }

    #[test]
    fn the_last_event_counts_without_its_blank_line() {
        assert_eq!(
            all(&[b"data:x\n\ndata: y"]),
            vec![
                Event {
                    event: None,
                    data: "x".into(),
                    id: None
                },
                Event {
                    event: None,
                    data: "y".into(),
                    id: None
                }
            ]
        );
        assert!(all(&[b"retry: 10\n\n: only a comment\n"]).is_empty());
    }
}
