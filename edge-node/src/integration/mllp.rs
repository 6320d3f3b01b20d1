//! MLLP framing (`<VT> message <FS><CR>`), sans-IO.
//!
//! [`Framer`] takes bytes as they arrive, in pieces of any size, and yields
//! [`FrameEvent`]s: complete frames, oversize frames (with their first bytes,
//! so a negative ACK can still be addressed), and the junk bytes skipped while
//! resynchronising on the next `VT`. Its output does not depend on how the
//! input was split into reads. It never buffers more than the configured
//! maximum frame size plus one read.

/// Start of block.
pub const VT: u8 = 0x0b;
/// End of block.
pub const FS: u8 = 0x1c;
/// Carriage return, ends the block after `FS`.
pub const CR: u8 = 0x0d;

/// How many leading bytes of an oversize frame are kept (for its header).
pub const OVERSIZE_HEAD: usize = 4096;

/// Framer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// Largest frame content accepted, in bytes.
    pub max_frame: usize,
    /// Accept `FS` not followed by `CR` as the end of a frame.
    pub tolerate_missing_cr: bool,
}

impl Default for FramerConfig {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            tolerate_missing_cr: false,
        }
    }
}

/// What the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete frame's content (between `VT` and `FS`).
    Frame(Vec<u8>),
    /// A frame longer than the maximum; its content was discarded except the
    /// first [`OVERSIZE_HEAD`] bytes. Reported once, when the limit is passed.
    Oversize {
        /// The first bytes of the frame.
        head: Vec<u8>,
    },
    /// Bytes outside any frame were skipped (junk before `VT`, or a frame
    /// whose `FS` was not followed by `CR` in strict mode).
    Skipped(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `VT`.
    Outside,
    /// Inside a frame, content in `buf`.
    Inside,
    /// Saw `FS`, waiting for `CR` (strict mode).
    AfterFs,
    /// Discarding an oversize frame until its `FS`.
    Discarding,
}

/// The streaming framer.
#[derive(Debug, Clone)]
pub struct Framer {
    cfg: FramerConfig,
    state: State,
    buf: Vec<u8>,
    /// In tolerant mode, a `CR` right after a frame's `FS` is part of the frame
    /// trailer, not junk, even if it arrives in a later read.
    eat_cr: bool,
    skipped: usize,
    events: std::collections::VecDeque<FrameEvent>,
    dropped_total: u64,
}

impl Framer {
    /// A framer with `cfg`.
    pub fn new(cfg: FramerConfig) -> Self {
        Self {
            cfg,
            state: State::Outside,
            buf: Vec::new(),
            eat_cr: false,
            skipped: 0,
            events: Default::default(),
            dropped_total: 0,
        }
    }

    /// Bytes skipped so far (junk, broken frames), for metrics.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Whether a frame has started and not ended (for the partial-frame timeout).
    pub fn in_frame(&self) -> bool {
        self.state != State::Outside
    }

    fn skip(&mut self, n: usize) {
        self.skipped += n;
        self.dropped_total += n as u64;
    }

    fn flush_skipped(&mut self) {
        if self.skipped > 0 {
            self.events.push_back(FrameEvent::Skipped(self.skipped));
            self.skipped = 0;
        }
    }

    /// Feeds bytes; events become available from [`Framer::next_event`].
    pub fn push(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match self.state {
                State::Outside => {
                    if self.eat_cr && input[0] == CR {
                        input = &input[1..];
                        self.eat_cr = false;
                        continue;
                    }
                    self.eat_cr = false;
                    match input.iter().position(|&b| b == VT) {
                        Some(i) => {
                            self.skip(i);
                            self.flush_skipped();
                            self.state = State::Inside;
                            self.buf.clear();
                            input = &input[i + 1..];
                        }
                        None => {
                            self.skip(input.len());
                            input = &[];
                        }
                    }
                }
                State::Inside => {
                    let room = self.cfg.max_frame.saturating_sub(self.buf.len());
                    match input.iter().position(|&b| b == FS) {
                        Some(i) if i <= room => {
                            self.buf.extend_from_slice(&input[..i]);
                            input = &input[i + 1..];
                            if self.cfg.tolerate_missing_cr {
                                self.complete();
                                self.eat_cr = true;
                            } else {
                                self.state = State::AfterFs;
                            }
                        }
                        _ if input.len() <= room => {
                            self.buf.extend_from_slice(input);
                            input = &[];
                        }
                        _ => {
                            // Over the limit before any FS: keep the head, drop the rest.
                            self.buf.extend_from_slice(&input[..room]);
                            input = &input[room..];
                            let mut head = std::mem::take(&mut self.buf);
                            head.truncate(OVERSIZE_HEAD);
                            self.events.push_back(FrameEvent::Oversize { head });
                            self.state = State::Discarding;
                        }
                    }
                }
                State::AfterFs => {
                    if input[0] == CR {
                        input = &input[1..];
                        self.complete();
                    } else {
                        // FS not followed by CR in strict mode: the frame is broken.
                        let n = self.buf.len() + 2;
                        self.buf.clear();
                        self.state = State::Outside;
                        self.skip(n);
                    }
                }
                State::Discarding => match input.iter().position(|&b| b == FS) {
                    Some(i) => {
                        input = &input[i + 1..];
                        self.state = State::Outside;
                        self.eat_cr = true;
                    }
                    None => input = &[],
                },
            }
        }
    }

    fn complete(&mut self) {
        let frame = std::mem::take(&mut self.buf);
        self.events.push_back(FrameEvent::Frame(frame));
        self.state = State::Outside;
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<FrameEvent> {
        self.events.pop_front()
    }

    /// At end of input (peer closed, or partial-frame timeout): reports skipped
    /// bytes and an unfinished frame's size; nothing is returned as a frame.
    pub fn finish(&mut self) -> Option<usize> {
        let partial = match self.state {
            State::Outside => None,
            State::Inside | State::AfterFs => Some(self.buf.len()),
            State::Discarding => Some(self.cfg.max_frame),
        };
        if let Some(n) = partial {
            self.skip(n);
        }
        self.flush_skipped();
        self.buf.clear();
        self.state = State::Outside;
        partial
    }

    /// Wraps `content` in an MLLP frame.
    pub fn encode(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len() + 3);
        out.push(VT);
        out.extend_from_slice(content);
        out.push(FS);
        out.push(CR);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(cfg: FramerConfig, chunks: &[&[u8]]) -> Vec<FrameEvent> {
        let mut f = Framer::new(cfg);
        let mut out = vec![];
        for c in chunks {
            f.push(c);
            while let Some(e) = f.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn frame(s: &str) -> FrameEvent {
        FrameEvent::Frame(s.as_bytes().to_vec())
    }

    #[test]
    fn frames_partial_reads_and_several_per_read() {
        let strict = FramerConfig::default();
        assert_eq!(run(strict, &[b"\x0bMSH|a\x1c\r"]), vec![frame("MSH|a")]);
        assert_eq!(
            run(
                strict,
                &[
                    b"\x0bMS",
                    b"H|a",
                    b"\x1c",
                    b"\r\x0bMSH|b\x1c\r\x0bMSH|c\x1c\r"
                ]
            ),
            vec![frame("MSH|a"), frame("MSH|b"), frame("MSH|c")]
        );
    }

    #[test]
    fn junk_before_vt_is_skipped_and_counted() {
        let mut f = Framer::new(FramerConfig::default());
        f.push(b"GET / HTTP/1.1\r\n\x0bMSH|a\x1c\r");
        assert_eq!(f.next_event(), Some(FrameEvent::Skipped(16)));
        assert_eq!(f.next_event(), Some(frame("MSH|a")));
        assert_eq!(f.dropped_total(), 16);
    }

    #[test]
    fn fs_without_cr_strict_and_tolerant() {
        let strict = FramerConfig::default();
        // Strict: the broken frame is dropped, the next one still parses.
        assert_eq!(
            run(strict, &[b"\x0bMSH|a\x1c\x0bMSH|b\x1c\r"]),
            vec![FrameEvent::Skipped(7), frame("MSH|b")]
        );
        // Strict, and nothing follows the FS: no frame (the IO layer's timeout ends it).
        let mut f = Framer::new(strict);
        f.push(b"\x0bMSH|a\x1c");
        assert_eq!(f.next_event(), None);
        assert!(f.in_frame());
        assert_eq!(f.finish(), Some(5));
        let tolerant = FramerConfig {
            tolerate_missing_cr: true,
            ..strict
        };
        assert_eq!(
            run(tolerant, &[b"\x0bMSH|a\x1c\x0bMSH|b\x1c", b"\r"]),
            vec![frame("MSH|a"), frame("MSH|b")]
        );
    }

    #[test]
    fn oversize_frames_are_reported_once_and_resynchronised() {
        let cfg = FramerConfig {
            max_frame: 10,
            tolerate_missing_cr: false,
        };
        let evs = run(
            cfg,
            &[b"\x0bMSH|0123456789", b"ABCDEF\x1c\r\x0bMSH|ok\x1c\r"],
        );
        assert_eq!(
            evs,
            vec![
                FrameEvent::Oversize {
                    head: b"MSH|012345".to_vec()
                },
                frame("MSH|ok")
            ]
        );
        // Exactly at the limit is fine.
        assert_eq!(
            run(cfg, &[b"\x0bMSH|012345\x1c\r"]),
            vec![frame("MSH|012345")]
        );
    }

    proptest! {
        /// However the bytes are split into reads, the events are the same
        /// (adjacent Skipped counts merged).
        #[test]
        fn output_does_not_depend_on_read_boundaries(
            parts in prop::collection::vec(
                prop_oneof![
                    Just(b"\x0bMSH|^~\\&|A\rPID|1\x1c\r".to_vec()),
                    Just(b"junk".to_vec()),
                    Just(vec![VT]),
                    Just(vec![FS]),
                    Just(vec![CR]),
                    prop::collection::vec(any::<u8>(), 0..40),
                ],
                0..20,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            tolerant in any::<bool>(),
            max_frame in 8usize..64,
        ) {
            let input: Vec<u8> = parts.concat();
            let cfg = FramerConfig { max_frame, tolerate_missing_cr: tolerant };
            let merge = |evs: Vec<FrameEvent>| {
                let mut out: Vec<FrameEvent> = vec![];
                for e in evs {
                    match (out.last_mut(), &e) {
                        (Some(FrameEvent::Skipped(a)), FrameEvent::Skipped(b)) => *a += b,
                        _ => out.push(e),
                    }
                }
                out
            };
            let whole = merge(run(cfg, &[&input]));
            let mut idx: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            idx.sort_unstable();
            let mut chunks = vec![];
            let mut last = 0;
            for i in idx {
                chunks.push(&input[last..i]);
                last = i;
            }
            chunks.push(&input[last..]);
            let split = merge(run(cfg, &chunks));
            prop_assert_eq!(whole, split);
        }
    }
}
