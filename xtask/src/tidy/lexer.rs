//! A small lexer for Rust source: enough to tell code from comments, string
//! literals and char literals, so the tidy rules look at code (identifiers,
//! paths, punctuation) and at the text of string literals, never at comments.
//!
//! It knows line and block comments (nested), normal, byte and C strings with
//! escapes, raw strings with any number of `#`, char and byte literals
//! (`'"'`, `'\''`, `b'x'`), lifetimes and labels (`'a`, `'outer:`), and raw
//! identifiers (`r#type`). It never fails: odd input becomes punctuation.

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or keyword (`r#` stripped from raw identifiers).
    Ident(String),
    /// A string literal of any flavour, with its text (escapes decoded in
    /// normal strings; raw strings as written).
    Str(String),
    /// A char or byte literal.
    Char,
    /// A lifetime or loop label.
    Lifetime,
    /// A number literal.
    Num,
    /// `::`.
    PathSep,
    /// Any other single punctuation character.
    Punct(char),
}

/// A token and the 1-based line where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub line: usize,
}

impl Token {
    /// Whether this token is the identifier `name`.
    pub fn is_ident(&self, name: &str) -> bool {
        matches!(&self.kind, Kind::Ident(n) if n == name)
    }

    /// The identifier's name, if this token is one.
    pub fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this token is the punctuation `c`.
    pub fn is_punct(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }

    /// Whether this token is `::`.
    pub fn is_path_sep(&self) -> bool {
        self.kind == Kind::PathSep
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn line_comment(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    /// After `/*`: up to the matching `*/`, nested comments included.
    fn block_comment(&mut self) {
        let mut depth = 1;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    depth += 1;
                }
                (Some('*'), Some('/')) => {
                    self.bump();
                    self.bump();
                    depth -= 1;
                }
                _ => {
                    self.bump();
                }
            }
        }
    }

    /// After the opening `"` of a non-raw string: its decoded text.
    fn quoted(&mut self) -> String {
        let mut text = String::new();
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => match self.bump() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some('0') => text.push('\0'),
                    Some('x') => {
                        let hex: String =
                            [self.bump(), self.bump()].into_iter().flatten().collect();
                        if let Some(ch) = u8::from_str_radix(&hex, 16).ok().map(char::from) {
                            text.push(ch);
                        }
                    }
                    Some('u') => {
                        let mut hex = String::new();
                        if self.peek(0) == Some('{') {
                            self.bump();
                            while let Some(h) = self.bump() {
                                if h == '}' {
                                    break;
                                }
                                hex.push(h);
                            }
                        }
                        if let Some(ch) =
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            text.push(ch);
                        }
                    }
                    // A line continuation: the newline and the next line's
                    // leading whitespace are not part of the string.
                    Some('\n') => {
                        while self.peek(0).is_some_and(char::is_whitespace) {
                            self.bump();
                        }
                    }
                    Some(other) => text.push(other),
                    None => break,
                },
                other => text.push(other),
            }
        }
        text
    }

    /// At `#`* `"` after a raw prefix: the raw string's text.
    fn raw(&mut self) -> String {
        let mut hashes = 0;
        while self.peek(0) == Some('#') {
            self.bump();
            hashes += 1;
        }
        self.bump(); // the opening quote
        let mut text = String::new();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|k| self.peek(k) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                return text;
            }
            text.push(c);
        }
        text
    }

    /// Whether the characters from `ahead` are `#`* followed by `"`.
    fn raw_string_follows(&self, ahead: usize) -> bool {
        let mut k = ahead;
        while self.peek(k) == Some('#') {
            k += 1;
        }
        self.peek(k) == Some('"')
    }

    /// After a `'`: a char literal, or a lifetime / label.
    fn quote(&mut self) -> Kind {
        match (self.peek(0), self.peek(1)) {
            (Some('\\'), _) => {
                self.bump();
                self.bump(); // the escaped character, `'` included
                while let Some(c) = self.bump() {
                    if c == '\'' || c == '\n' {
                        break;
                    }
                }
                Kind::Char
            }
            (Some(_), Some('\'')) => {
                self.bump();
                self.bump();
                Kind::Char
            }
            _ => {
                while self.peek(0).is_some_and(is_ident_continue) {
                    self.bump();
                }
                Kind::Lifetime
            }
        }
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek(0).filter(|&c| is_ident_continue(c)) {
            w.push(c);
            self.bump();
        }
        w
    }

    fn next(&mut self) -> Option<Token> {
        loop {
            let c = self.peek(0)?;
            if c.is_whitespace() {
                self.bump();
                continue;
            }
            if c == '/' && self.peek(1) == Some('/') {
                self.line_comment();
                continue;
            }
            if c == '/' && self.peek(1) == Some('*') {
                self.bump();
                self.bump();
                self.block_comment();
                continue;
            }
            let line = self.line;
            let kind = if c == '"' {
                self.bump();
                Kind::Str(self.quoted())
            } else if c == '\'' {
                self.bump();
                self.quote()
            } else if c.is_ascii_digit() {
                self.word();
                Kind::Num
            } else if is_ident_start(c) {
                // String, byte and raw prefixes, raw identifiers.
                match (c, self.peek(1), self.peek(2)) {
                    ('b' | 'c', Some('"'), _) => {
                        self.bump();
                        self.bump();
                        Kind::Str(self.quoted())
                    }
                    ('b', Some('\''), _) => {
                        self.bump();
                        self.bump();
                        self.quote()
                    }
                    ('r', Some('"' | '#'), _) if self.raw_string_follows(1) => {
                        self.bump();
                        Kind::Str(self.raw())
                    }
                    ('b' | 'c', Some('r'), Some('"' | '#')) if self.raw_string_follows(2) => {
                        self.bump();
                        self.bump();
                        Kind::Str(self.raw())
                    }
                    ('r', Some('#'), Some(n)) if is_ident_start(n) => {
                        self.bump();
                        self.bump();
                        Kind::Ident(self.word())
                    }
                    _ => Kind::Ident(self.word()),
                }
            } else if c == ':' && self.peek(1) == Some(':') {
                self.bump();
                self.bump();
                Kind::PathSep
            } else {
                self.bump();
                Kind::Punct(c)
            };
            return Some(Token { kind, line });
        }
    }
}

/// The tokens of a Rust source text, comments dropped.
pub fn tokenize(src: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut out = vec![];
    while let Some(t) = lexer.next() {
        out.push(t);
    }
    out
}
