//! RE2's small lexers: escaped characters (`ParseEscape`) and repetition counts
//! (`MaybeParseRepetition`).

use crate::{
    error::{ErrorCode, ParseError, ParseResult},
    parse::RUNE_MAX_LATIN1,
};

fn digit(c: u32, radix: u32) -> Option<u32> {
    char::from_u32(c)?.to_digit(radix)
}

/// The character an escape at `pos` (a `\`) stands for, and where the escape ends.
pub(crate) fn parse_escape(runes: &[u32], pos: usize) -> ParseResult<(u32, usize)> {
    let Some(&c) = runes.get(pos + 1) else {
        return Err(ParseError::new(ErrorCode::TrailingBackslash, pos..pos));
    };
    let mut end = pos + 2;
    let bad = |end: usize| ParseError::new(ErrorCode::BadEscape, pos..end);
    let r = match char::from_u32(c).unwrap_or('\u{FFFD}') {
        '1'..='7' if runes.get(end).and_then(|&d| digit(d, 8)).is_none() => {
            // A lone digit would be a backreference, which RE2 does not have.
            return Err(bad(end));
        }
        d @ '0'..='7' => {
            let mut code = d as u32 - u32::from(b'0');
            for _ in 0..2 {
                match runes.get(end).and_then(|&d| digit(d, 8)) {
                    Some(d) => {
                        code = code * 8 + d;
                        end += 1;
                    }
                    None => break,
                }
            }
            if code > RUNE_MAX_LATIN1 {
                return Err(bad(end));
            }
            code
        }
        'x' => return hex_escape(runes, pos),
        'n' => u32::from(b'\n'),
        'r' => u32::from(b'\r'),
        't' => u32::from(b'\t'),
        'a' => 0x07,
        'f' => 0x0c,
        'v' => 0x0b,
        // Escaped punctuation is itself; letters and digits are reserved.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => u32::from(c),
        _ => return Err(bad(end)),
    };
    Ok((r, end))
}

/// `\xHH` or `\x{H...}`, at most `\xff` in Latin-1.
fn hex_escape(runes: &[u32], pos: usize) -> ParseResult<(u32, usize)> {
    let bad = |end: usize| ParseError::new(ErrorCode::BadEscape, pos..end);
    let mut end = pos + 2;
    let Some(&c) = runes.get(end) else {
        return Err(bad(end));
    };
    end += 1;
    if c != u32::from(b'{') {
        let Some(&c1) = runes.get(end) else {
            return Err(bad(end));
        };
        end += 1;
        return match (digit(c, 16), digit(c1, 16)) {
            (Some(hi), Some(lo)) => Ok((hi * 16 + lo, end)),
            _ => Err(bad(end)),
        };
    }
    // RE2 reads one more character without looking whether there is one.
    let Some(&first) = runes.get(end) else {
        return Err(ParseError::new(ErrorCode::BadUtf8, end..end));
    };
    end += 1;
    let (mut c, mut code, mut digits) = (first, 0, 0);
    while let Some(d) = digit(c, 16) {
        digits += 1;
        code = code * 16 + d;
        if code > RUNE_MAX_LATIN1 {
            return Err(bad(end));
        }
        let Some(&next) = runes.get(end) else {
            return Err(bad(end));
        };
        c = next;
        end += 1;
    }
    if c != u32::from(b'}') || digits == 0 {
        return Err(bad(end));
    }
    Ok((code, end))
}

/// A decimal number as RE2 reads one in a count: no leading zero, below 10^8 + 10.
fn parse_integer(runes: &[u32], pos: &mut usize) -> Option<i32> {
    digit(*runes.get(*pos)?, 10)?;
    if runes.get(*pos) == Some(&u32::from(b'0'))
        && runes.get(*pos + 1).and_then(|&d| digit(d, 10)).is_some()
    {
        return None;
    }
    let mut n: i32 = 0;
    while let Some(d) = runes.get(*pos).and_then(|&d| digit(d, 10)) {
        if n >= 100_000_000 {
            return None;
        }
        n = n * 10 + d as i32;
        *pos += 1;
    }
    Some(n)
}

/// `{n}`, `{n,}` or `{n,m}` at `pos`: the bounds (-1: none) and where it ends; `None` when
/// the `{` starts no count (RE2 then takes it as a literal).
pub(crate) fn parse_repetition(runes: &[u32], pos: usize) -> Option<(i32, i32, usize)> {
    let mut p = pos + 1;
    let min = parse_integer(runes, &mut p)?;
    let max = if *runes.get(p)? == u32::from(b',') {
        p += 1;
        if *runes.get(p)? == u32::from(b'}') {
            -1
        } else {
            parse_integer(runes, &mut p)?
        }
    } else {
        min
    };
    (*runes.get(p)? == u32::from(b'}')).then_some((min, max, p + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runes(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    fn escape(s: &str) -> ParseResult<(u32, usize)> {
        parse_escape(&runes(s), 0)
    }

    #[test]
    fn escapes_read_as_re2_reads_them() {
        assert_eq!(escape(r"\n"), Ok((10, 2)));
        assert_eq!(escape(r"\.x"), Ok((u32::from(b'.'), 2)));
        assert_eq!(escape(r"\101"), Ok((65, 4)));
        assert_eq!(escape(r"\0"), Ok((0, 2)));
        assert_eq!(escape(r"\x41"), Ok((65, 4)));
        assert_eq!(escape(r"\x{ff}"), Ok((255, 6)));
        assert_eq!(
            escape(r"\x{100}").map_err(|e| e.code),
            Err(ErrorCode::BadEscape)
        );
        assert_eq!(escape(r"\1").map_err(|e| e.code), Err(ErrorCode::BadEscape));
        assert_eq!(escape(r"\q").map_err(|e| e.code), Err(ErrorCode::BadEscape));
        assert_eq!(escape(r"\x{").map_err(|e| e.code), Err(ErrorCode::BadUtf8));
        assert_eq!(
            escape("\\").map_err(|e| e.code),
            Err(ErrorCode::TrailingBackslash)
        );
    }

    #[test]
    fn counts_read_as_re2_reads_them() {
        let rep = |s: &str| parse_repetition(&runes(s), 0);
        assert_eq!(rep("{2}"), Some((2, 2, 3)));
        assert_eq!(rep("{2,}x"), Some((2, -1, 4)));
        assert_eq!(rep("{2,5}"), Some((2, 5, 5)));
        assert_eq!(rep("{,5}"), None);
        assert_eq!(rep("{02}"), None);
        assert_eq!(rep("{2"), None);
        assert_eq!(rep("{1000000000}"), None);
    }
}
