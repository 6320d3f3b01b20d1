//! Diagnostics: what is wrong with a configuration file, and where.
//!
//! A [`Diagnostic`] names the file, a 1-based line and column and a message, and
//! prints like a compiler message (`file:line:col: error: message`) so that
//! editors and CI logs can jump to it. [`LineIndex`] turns the byte offsets the
//! TOML parser reports into those lines and columns.

use std::fmt;
use std::ops::Range;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// The configuration can be used, but something in it is ignored or odd.
    Warning,
}

impl Severity {
    /// `error` or `warning`, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding about a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// The file, as given by the caller.
    pub file: String,
    /// 1-based line; 0 when the finding is about the whole file (unreadable).
    pub line: usize,
    /// 1-based column in characters; 0 when `line` is 0.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in words.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, self.severity, self.message
        )
    }
}

/// A configuration that cannot be used.
///
/// Holds every diagnostic found, errors and warnings, in source order. Its
/// `Display` prints each error on its own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// All diagnostics, in source order. At least one is an error.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// The error diagnostics only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Maps byte offsets of a text to 1-based lines and columns.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`.
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self { text, starts }
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    ///
    /// An offset past the end is clamped to the end; one inside a multi-byte
    /// character counts the bytes before it.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (line, col + 1)
    }

    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    file: String,
    index: LineIndex<'a>,
    strict: bool,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    /// A sink for `text` from `file`; `strict` makes unknown keys errors.
    pub(crate) fn new(file: String, text: &'a str, strict: bool) -> Self {
        Self {
            file,
            index: LineIndex::new(text),
            strict,
            diagnostics: Vec::new(),
        }
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.index.line(offset)
    }

    fn push(&mut self, span: &Range<usize>, severity: Severity, message: String) {
        let (line, col) = self.index.position(span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            severity,
            message,
        });
    }

    /// Reports an error at `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Error, message.into());
    }

    /// Reports a warning at `span`.
    pub(crate) fn warning(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.push(span, Severity::Warning, message.into());
    }

    /// Reports an unknown key: an error when strict, a warning otherwise.
    pub(crate) fn unknown(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let severity = if self.strict {
            Severity::Error
        } else {
            Severity::Warning
        };
        self.push(span, severity, message.into());
    }

    /// Whether any error was reported.
    pub(crate) fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// All diagnostics in source order (stable for equal positions).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| (d.line, d.col));
        self.diagnostics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let idx = LineIndex::new("ab\nçd\n\nx");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(1), (1, 2));
        assert_eq!(idx.position(2), (1, 3));
        assert_eq!(idx.position(3), (2, 1));
        // 'ç' is two bytes: 'd' is the second character.
        assert_eq!(idx.position(5), (2, 2));
        assert_eq!(idx.position(7), (3, 1));
        assert_eq!(idx.position(8), (4, 1));
        assert_eq!(idx.position(999), (4, 2));
    }

    #[test]
    fn config_error_displays_errors_only() {
        let d = |severity, line| Diagnostic {
            file: "f.toml".into(),
            line,
            col: 1,
            severity,
            message: "m".into(),
        };
        let e = ConfigError {
            diagnostics: vec![
                d(Severity::Error, 1),
                d(Severity::Warning, 2),
                d(Severity::Error, 3),
            ],
        };
        assert_eq!(e.to_string(), "f.toml:1:1: error: m\nf.toml:3:1: error: m");
    }
}
