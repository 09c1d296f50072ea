//! STOMP 1.2 frames: a command line, `name:value` header lines (escaped), a blank line, the
//! body and a NUL byte.

use cqrs_core::{Error, Result};

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) command: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Frame {
    pub(crate) fn new(command: &str) -> Self {
        Frame {
            command: command.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// The first header `name` (STOMP 1.2: a repeated header's first value counts).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the frame's bytes to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // NOTE: CONNECT's headers are not escaped (STOMP 1.2, for 1.0 servers' sake).
        let escape = self.command != "CONNECT";
        out.extend_from_slice(self.command.as_bytes());
        out.push(b'\n');
        for (name, value) in &self.headers {
            push_escaped(out, name, escape);
            out.push(b':');
            push_escaped(out, value, escape);
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
    }

    /// Takes the first whole frame off the front of `buf`, if there is one; end-of-line bytes
    /// between frames (heart-beats) are skipped.
    pub(crate) fn parse(buf: &mut Vec<u8>) -> Result<Option<Frame>> {
        let start = buf
            .iter()
            .position(|&b| b != b'\n' && b != b'\r')
            .unwrap_or(buf.len());
        if start > 0 {
            buf.drain(..start);
        }
        let Some(head_end) = find(buf, b"\n\n")
            .map(|i| (i, i + 2))
            .into_iter()
            .chain(find(buf, b"\r\n\r\n").map(|i| (i, i + 4)))
            .min_by_key(|(i, _)| *i)
        else {
            return Ok(None);
        };
        let (head_len, body_start) = head_end;
        let head = std::str::from_utf8(&buf[..head_len])
            .map_err(|_| Error::backend("STOMP frame headers are not UTF-8"))?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command = lines.next().unwrap_or_default().to_owned();
        let unescape_values = command != "CONNECTED";
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| Error::backend(format!("bad STOMP header line {line:?}")))?;
            if unescape_values {
                headers.push((unescape(name)?, unescape(value)?));
            } else {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body_end = match length {
            Some(len) => {
                if buf.len() < body_start + len + 1 {
                    return Ok(None);
                }
                if buf[body_start + len] != 0 {
                    return Err(Error::backend("STOMP frame body not ended by NUL"));
                }
                body_start + len
            }
            None => match buf[body_start..].iter().position(|&b| b == 0) {
                Some(i) => body_start + i,
                None => return Ok(None),
            },
        };
        let body = buf[body_start..body_end].to_vec();
        buf.drain(..=body_end);
        Ok(Some(Frame {
            command,
            headers,
            body,
        }))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn push_escaped(out: &mut Vec<u8>, s: &str, escape: bool) {
    if !escape {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            b => out.push(b),
        }
    }
}

fn unescape(s: &str) -> Result<String> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            other => {
                return Err(Error::backend(format!(
                    "bad STOMP header escape \\{}",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_survives_the_round_trip_with_escapes() {
        let frame = Frame::new("SEND")
            .header("destination", "/queue/a")
            .header("cqrs-error", "line one\nkey: value \\ done\r")
            .body(b"{\"a\":1}".to_vec());
        let mut bytes = b"\n\r\n".to_vec();
        frame.encode(&mut bytes);
        frame.encode(&mut bytes);
        bytes.extend_from_slice(b"MESS");
        let first = Frame::parse(&mut bytes).unwrap().unwrap();
        assert_eq!(first, frame);
        assert_eq!(Frame::parse(&mut bytes).unwrap().unwrap(), frame);
        assert_eq!(
            Frame::parse(&mut bytes).unwrap(),
            None,
            "a partial frame waits"
        );
        assert_eq!(bytes, b"MESS");
    }

    #[test]
    fn a_body_with_content_length_may_hold_nul_bytes() {
        let mut bytes = b"MESSAGE\ncontent-length:3\nmessage-id:ID\\c1\n\na\0b\0".to_vec();
        let frame = Frame::parse(&mut bytes).unwrap().unwrap();
        assert_eq!(frame.body, b"a\0b");
        assert_eq!(frame.get("message-id"), Some("ID:1"));
        assert!(bytes.is_empty());
    }

    #[test]
    fn a_bad_escape_is_an_error() {
        let mut bytes = b"MESSAGE\nx:\\t\n\n\0".to_vec();
        assert!(Frame::parse(&mut bytes).is_err());
    }
}
