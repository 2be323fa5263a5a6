//! Bounded `\n` line framing shared by the line protocols.
//!
//! Lines end at `\n` only; a `\r` right before it is removed. A line longer
//! than the limit is skipped in constant memory (the framer discards up to
//! the next `\n`) and reported once, so one bad sender line never closes a
//! connection carrying good lines. Scanning resumes where it stopped, so a
//! slow sender cannot make the framer rescan the same bytes.

use memchr::memchr;

/// One framed line, or the report of a line that was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its `\n` (and without a trailing `\r`).
    Complete(&'a [u8]),
    /// A line longer than the limit was skipped.
    TooLong {
        /// How long it was, without its `\n`.
        len: usize,
    },
}

/// Stateful line framer over successive read buffers.
#[derive(Debug)]
pub struct LineFramer {
    max_len: usize,
    /// Bytes of an oversized line already thrown away.
    discarded: Option<usize>,
    /// How much of the unconsumed tail was already searched for `\n`.
    scanned: usize,
}

impl LineFramer {
    /// A framer accepting lines of at most `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            discarded: None,
            scanned: 0,
        }
    }

    /// Calls `on_line` for each line that ends in `buf` and returns how many
    /// bytes were consumed. Unconsumed bytes are an incomplete line the
    /// caller passes again, with more data, on the next call.
    pub fn frame<'a>(&mut self, buf: &'a [u8], mut on_line: impl FnMut(Line<'a>)) -> usize {
        let mut start = 0;
        let mut search_from = self.scanned.min(buf.len());
        while let Some(offset) = memchr(b'\n', &buf[search_from..]) {
            let end = search_from + offset;
            if let Some(discarded) = self.discarded.take() {
                on_line(Line::TooLong {
                    len: discarded + (end - start),
                });
            } else if end - start > self.max_len {
                on_line(Line::TooLong { len: end - start });
            } else {
                let line = &buf[start..end];
                on_line(Line::Complete(line.strip_suffix(b"\r").unwrap_or(line)));
            }
            start = end + 1;
            search_from = start;
        }
        let tail = buf.len() - start;
        if let Some(discarded) = self.discarded.as_mut() {
            *discarded += tail;
            self.scanned = 0;
            return buf.len();
        }
        if tail > self.max_len {
            self.discarded = Some(tail);
            self.scanned = 0;
            return buf.len();
        }
        self.scanned = tail;
        start
    }

    /// Ends the stream: reports an oversized line still being discarded and
    /// returns whether one was. Resets the framer.
    pub fn finish(&mut self, mut on_line: impl FnMut(Line<'_>)) -> bool {
        self.scanned = 0;
        match self.discarded.take() {
            Some(len) => {
                on_line(Line::TooLong { len });
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(framer: &mut LineFramer, buf: &[u8]) -> (Vec<String>, usize) {
        let mut lines = Vec::new();
        let used = framer.frame(buf, |line| {
            lines.push(match line {
                Line::Complete(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Line::TooLong { len } => format!("<too long {len}>"),
            })
        });
        (lines, used)
    }

    #[test]
    fn splits_on_newline_only_and_strips_one_cr() {
        let mut framer = LineFramer::new(100);
        let (lines, used) = frame_all(&mut framer, b"a 1 2\r\nb\r3\n\r\r\npartial");
        assert_eq!(lines, vec!["a 1 2", "b\r3", "\r"]);
        assert_eq!(used, 14);
    }

    #[test]
    fn resumes_a_partial_line_across_reads() {
        let mut framer = LineFramer::new(100);
        let (lines, used) = frame_all(&mut framer, b"abc");
        assert!(lines.is_empty());
        assert_eq!(used, 0);
        let (lines, used) = frame_all(&mut framer, b"abcdef\nx");
        assert_eq!(lines, vec!["abcdef"]);
        assert_eq!(used, 7);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_one_more_byte_is_skipped() {
        let mut framer = LineFramer::new(4);
        let (lines, _) = frame_all(&mut framer, b"abcd\nabcde\nok\n");
        assert_eq!(lines, vec!["abcd", "<too long 5>", "ok"]);
    }

    #[test]
    fn an_oversized_partial_line_is_discarded_in_constant_memory() {
        let mut framer = LineFramer::new(4);
        let (lines, used) = frame_all(&mut framer, b"ok\nabcdefgh");
        assert_eq!((lines, used), (vec!["ok".to_owned()], 11));
        let (lines, used) = frame_all(&mut framer, b"ijkl");
        assert_eq!((lines.len(), used), (0, 4));
        let (lines, used) = frame_all(&mut framer, b"mn\nnext\n");
        assert_eq!(lines, vec!["<too long 14>", "next"]);
        assert_eq!(used, 8);
    }

    #[test]
    fn finish_reports_a_line_still_being_discarded() {
        let mut framer = LineFramer::new(2);
        let _ = frame_all(&mut framer, b"abcdef");
        let mut reported = Vec::new();
        assert!(framer.finish(|line| reported.push(format!("{line:?}"))));
        assert_eq!(reported, vec!["TooLong { len: 6 }"]);
        assert!(!framer.finish(|_| {}));
    }
}
