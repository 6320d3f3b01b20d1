//! HL7 escape sequences (`\F\ \S\ \T\ \R\ \E\ \Xhh…\ \.br\` …), decoded
//! without ever panicking, whatever the text around them (non-ASCII included).

use super::Delimiters;

/// Decodes the escape sequences in one component or subcomponent value.
///
/// Delimiter escapes become their characters; `\Xhh…\` becomes the bytes it
/// names (as UTF-8 when they form UTF-8, else Latin-1); `\.br\` and `\.sp\`
/// become line breaks; highlighting (`\H\`, `\N\`), other formatting and
/// character-set switches (`\C…\`, `\M…\`) are dropped; anything else, and an
/// unterminated escape, is kept literally.
pub fn decode(s: &str, d: &Delimiters) -> String {
    let esc = d.escape;
    if !s.contains(esc) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(esc) {
        out.push_str(&rest[..i]);
        let after = &rest[i + esc.len_utf8()..];
        let Some(j) = after.find(esc) else {
            // Unterminated: keep it as it is.
            out.push_str(&rest[i..]);
            return out;
        };
        let seq = &after[..j];
        match seq {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(d.escape),
            "P" => out.push(d.truncation.unwrap_or('#')),
            ".br" | ".sp" => out.push('\n'),
            "H" | "N" => {}
            _ if seq.starts_with('.') => {}
            _ if seq.starts_with('C') || seq.starts_with('M') => {}
            _ if seq.starts_with('X') => match hex(&seq[1..]) {
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(t) => out.push_str(&t),
                    Err(e) => out.extend(e.into_bytes().into_iter().map(char::from)),
                },
                None => {
                    out.push(esc);
                    out.push_str(seq);
                    out.push(esc);
                }
            },
            _ => {
                out.push(esc);
                out.push_str(seq);
                out.push(esc);
            }
        }
        rest = &after[j + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn decodes_every_sequence() {
        for (input, want) in [
            (r"A\F\B", "A|B"),
            (r"A\S\B\T\C\R\D\E\E", "A^B&C~D\\E"),
            (r"line1\.br\line2", "line1\nline2"),
            (r"\H\bold\N\", "bold"),
            (r"caf\XC3A9\", "café"),
            (r"caf\XE9\", "café"),
            (r"Müller\F\Straße", "Müller|Straße"),
            (r"ÅÄÖ\S\ü\E\", "ÅÄÖ^ü\\"),
            (r"unterminated\F", r"unterminated\F"),
            (r"\Zunknown\", r"\Zunknown\"),
            (r"\XZZ\", r"\XZZ\"),
            (r"\C2842\x", "x"),
            ("plain", "plain"),
        ] {
            assert_eq!(decode(input, &d()), want, "{input}");
        }
    }

    #[test]
    fn custom_escape_character() {
        let d = Delimiters {
            escape: '!',
            ..Delimiters::default()
        };
        assert_eq!(decode("a!F!b", &d), "a|b");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = decode(&s, &d());
        }

        #[test]
        fn text_without_escapes_is_unchanged(s in "[^\\\\]*") {
            prop_assert_eq!(decode(&s, &d()), s);
        }
    }
}
