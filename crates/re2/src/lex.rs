//! RE2's parser loop (`Regexp::Parse`) with Envoy's options: Perl syntax, Latin-1. Envoy
//! hands RE2 the pattern's UTF-8 bytes and RE2 reads each byte as one Latin-1 character,
//! so here a rune is a byte and a span of runes is a span of the pattern's bytes.

use std::ops::Range;

use crate::{
    class::CharClass,
    error::{ErrorCode, ParseError, ParseResult},
    escape::{parse_escape, parse_repetition},
    groups::{self, Group},
    parse::ParseState,
    regexp::{Flags, Id, Op, Rep, Tree},
};

/// Parses `runes` into `tree`, returning the root.
pub(crate) fn parse(tree: &mut Tree, runes: &[u32]) -> ParseResult<Id> {
    let mut lexer = Lexer {
        state: ParseState::new(tree, runes.len()),
        runes,
        pos: 0,
    };
    let mut last_unary: Option<usize> = None;
    while lexer.pos < runes.len() {
        last_unary = lexer.token(last_unary)?;
    }
    lexer.state.finish_pattern()
}

pub(crate) struct Lexer<'a, 't> {
    pub(crate) state: ParseState<'t>,
    pub(crate) runes: &'a [u32],
    pub(crate) pos: usize,
}

fn is(r: Option<&u32>, c: u8) -> bool {
    r == Some(&u32::from(c))
}

impl Lexer<'_, '_> {
    fn at(&self, offset: usize) -> Option<&u32> {
        self.runes.get(self.pos + offset)
    }

    fn remaining(&self) -> usize {
        self.runes.len() - self.pos
    }

    /// One token; returns where it began when it was a repetition operator, which another
    /// may not follow.
    fn token(&mut self, last_unary: Option<usize>) -> ParseResult<Option<usize>> {
        let c = char::from_u32(self.runes[self.pos]).unwrap_or('\0');
        match c {
            '(' if is(self.at(1), b'?') => self.perl_flags()?,
            '(' => {
                self.state.push_left_paren(None, true);
                self.pos += 1;
            }
            '|' => self.single(|s| s.push_vertical_bar()),
            ')' => {
                self.state.push_right_paren()?;
                self.pos += 1;
            }
            '^' => self.single(|s| s.push_caret()),
            '$' => self.single(|s| s.push_dollar()),
            '.' => self.single(|s| s.push_dot()),
            '[' => {
                let class = self.char_class()?;
                let id = self.state.new_class(class);
                self.state.push_regexp(id);
            }
            '*' | '+' | '?' => return self.repetition(c, last_unary).map(Some),
            '{' => return self.counted_repetition(last_unary),
            '\\' => self.escape()?,
            _ => {
                self.state.push_literal(self.runes[self.pos]);
                self.pos += 1;
            }
        }
        Ok(None)
    }

    fn single(&mut self, push: impl FnOnce(&mut ParseState<'_>)) {
        push(&mut self.state);
        self.pos += 1;
    }

    /// The end of a repetition operator: a `?` after it makes it non-greedy, and it may not
    /// follow another.
    fn operator_end(
        &mut self,
        start: usize,
        last_unary: Option<usize>,
    ) -> ParseResult<(Range<usize>, bool)> {
        let nongreedy = is(self.at(0), b'?');
        if nongreedy {
            self.pos += 1;
        }
        if let Some(last) = last_unary {
            return Err(ParseError::new(ErrorCode::RepeatOp, last..self.pos));
        }
        Ok((start..self.pos, nongreedy))
    }

    fn repetition(&mut self, c: char, last_unary: Option<usize>) -> ParseResult<usize> {
        let rep = match c {
            '*' => Rep::Star,
            '+' => Rep::Plus,
            _ => Rep::Quest,
        };
        let start = self.pos;
        self.pos += 1;
        let (span, nongreedy) = self.operator_end(start, last_unary)?;
        self.state.push_rep(rep, span, nongreedy)?;
        Ok(start)
    }

    /// `{n}`, `{n,}` or `{n,m}`; anything else after `{` makes it a literal.
    fn counted_repetition(&mut self, last_unary: Option<usize>) -> ParseResult<Option<usize>> {
        let start = self.pos;
        let Some((min, max, end)) = parse_repetition(self.runes, start) else {
            self.state.push_literal(u32::from(b'{'));
            self.pos += 1;
            return Ok(None);
        };
        self.pos = end;
        let (span, nongreedy) = self.operator_end(start, last_unary)?;
        self.state.push_repeat(min, max, span, nongreedy)?;
        Ok(Some(start))
    }

    /// After `\`: an assertion, `\C`, `\Q...\E`, a named class or an escaped character.
    fn escape(&mut self) -> ParseResult<()> {
        let next = self.at(1).and_then(|&c| char::from_u32(c));
        let op = match next {
            Some('b') => Some(Op::WordBoundary),
            Some('B') => Some(Op::NoWordBoundary),
            Some('A') => Some(Op::BeginText),
            Some('z') => Some(Op::EndText),
            Some('C') => Some(Op::AnyByte),
            _ => None,
        };
        if let Some(op) = op {
            self.state.push_simple(op);
            self.pos += 2;
            return Ok(());
        }
        if next == Some('Q') {
            self.quoted();
            return Ok(());
        }
        if let Some(class) = self.named_class()? {
            let id = self.state.new_class(class);
            self.state.push_regexp(id);
            return Ok(());
        }
        let (r, end) = parse_escape(self.runes, self.pos)?;
        self.state.push_literal(r);
        self.pos = end;
        Ok(())
    }

    /// `\Q...\E`: everything up to `\E` (or the end) is literal.
    fn quoted(&mut self) {
        self.pos += 2;
        while self.pos < self.runes.len() {
            if is(self.at(0), b'\\') && is(self.at(1), b'E') {
                self.pos += 2;
                break;
            }
            self.state.push_literal(self.runes[self.pos]);
            self.pos += 1;
        }
    }

    /// `\pN`, `\p{Name}`, `\P...`, `\d`, `\s`, `\w` and capitals, as a class.
    fn named_class(&mut self) -> ParseResult<Option<CharClass>> {
        let mut class = CharClass::default();
        if self.remaining() >= 2 && (is(self.at(1), b'p') || is(self.at(1), b'P')) {
            self.unicode_group(&mut class)?;
            return Ok(Some(class));
        }
        if let Some(group) = self.perl_group() {
            add_group(&mut class, group, group.negated, self.state.flags);
            self.pos += 2;
            return Ok(Some(class));
        }
        Ok(None)
    }

    fn perl_group(&self) -> Option<Group> {
        if !is(self.at(0), b'\\') {
            return None;
        }
        groups::perl(*self.at(1)?)
    }

    /// `\pN`, `\p{Name}`, `\p{^Name}`, `\P...` (`ParseUnicodeGroup`), added to `class`.
    pub(crate) fn unicode_group(&mut self, class: &mut CharClass) -> ParseResult<()> {
        let start = self.pos;
        let mut negated = is(self.at(1), b'P');
        self.pos += 2;
        let name = match self.at(0).copied() {
            // RE2 keeps going without a name, and finds none of that name.
            None => start + 2..start + 2,
            Some(c) if c != u32::from(b'{') => {
                self.pos += 1;
                self.pos - 1..self.pos
            }
            Some(_) => {
                let Some(end) = self.find(b'}', self.pos + 1) else {
                    return Err(ParseError::new(
                        ErrorCode::BadCharRange,
                        start..self.runes.len(),
                    ));
                };
                let name = self.pos + 1..end;
                self.pos = end + 1;
                name
            }
        };
        let mut name = text(&self.runes[name]);
        if let Some(rest) = name.strip_prefix('^') {
            negated = !negated;
            name = rest.to_owned();
        }
        let group = groups::unicode(&name)
            .ok_or_else(|| ParseError::new(ErrorCode::BadCharRange, start..self.pos))?;
        add_group(class, group, negated, self.state.flags);
        Ok(())
    }

    /// Where the next `c` is, from `from`.
    pub(crate) fn find(&self, c: u8, from: usize) -> Option<usize> {
        (from..self.runes.len()).find(|&i| self.runes[i] == u32::from(c))
    }

    /// `(?flags)`, `(?flags:`, `(?P<name>` and `(?<name>` (`ParsePerlFlags`).
    fn perl_flags(&mut self) -> ParseResult<()> {
        let start = self.pos;
        let (c2, c3) = (self.at(2).copied(), self.at(3).copied());
        let lookaround = |c: Option<u32>| c == Some(u32::from(b'=')) || c == Some(u32::from(b'!'));
        let behind = c2 == Some(u32::from(b'<'));
        if (self.remaining() > 3 && lookaround(c2))
            || (self.remaining() > 4 && behind && lookaround(c3))
        {
            let len = if behind { 4 } else { 3 };
            return Err(ParseError::new(ErrorCode::BadPerlOp, start..start + len));
        }
        let python = c2 == Some(u32::from(b'P')) && c3 == Some(u32::from(b'<'));
        if (self.remaining() > 4 && python) || (self.remaining() > 3 && behind) {
            return self.named_group(if python { 4 } else { 3 });
        }
        self.flag_edits()
    }

    /// `(?P<name>` or `(?<name>`; the name begins `begin` runes after the `(`.
    fn named_group(&mut self, begin: usize) -> ParseResult<()> {
        let start = self.pos;
        let Some(end) = self.find(b'>', start + 2) else {
            return Err(ParseError::new(
                ErrorCode::BadNamedCapture,
                start..self.runes.len(),
            ));
        };
        let name = &self.runes[start + begin..end];
        if name.is_empty() || !name.iter().all(|&c| groups::is_capture_name_rune(c)) {
            return Err(ParseError::new(ErrorCode::BadNamedCapture, start..end + 1));
        }
        self.state.push_left_paren(Some(text(name)), true);
        self.pos = end + 1;
        Ok(())
    }

    /// `(?imsU-imsU)` or `(?imsU-imsU:`.
    fn flag_edits(&mut self) -> ParseResult<()> {
        let start = self.pos;
        let mut t = start + 2;
        let bad = |t: usize| ParseError::new(ErrorCode::BadPerlOp, start..t);
        let (mut negated, mut saw_flags) = (false, false);
        let mut flags = self.state.flags;
        loop {
            let Some(&c) = self.runes.get(t) else {
                return Err(bad(t));
            };
            t += 1;
            let bit = match char::from_u32(c) {
                Some('i') => Flags::FOLD_CASE,
                // `m` is the opposite of RE2's one-line mode.
                Some('m') => Flags::ONE_LINE,
                Some('s') => Flags::DOT_NL,
                Some('U') => Flags::NON_GREEDY,
                Some('-') if !negated => {
                    negated = true;
                    saw_flags = false;
                    continue;
                }
                Some(':') => {
                    self.state.push_left_paren(None, false);
                    break;
                }
                Some(')') => break,
                _ => return Err(bad(t)),
            };
            saw_flags = true;
            let on = negated == (bit == Flags::ONE_LINE);
            flags = if on {
                flags.with(bit)
            } else {
                flags.without(bit)
            };
        }
        if negated && !saw_flags {
            return Err(bad(t));
        }
        self.state.flags = flags;
        self.pos = t;
        Ok(())
    }
}

/// The name a span of runes spells (names RE2 knows are ASCII).
pub(crate) fn text(runes: &[u32]) -> String {
    runes
        .iter()
        .map(|&c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Adds a named class, or its complement, to `class` (`AddUGroup`). The complement of a
/// class under `(?i)` leaves out the other case of what the class holds too.
pub(crate) fn add_group(class: &mut CharClass, group: Group, negated: bool, flags: Flags) {
    let fold = flags.has(Flags::FOLD_CASE);
    let add = |class: &mut CharClass, lo, hi| {
        if fold {
            class.add_folded_range(lo, hi);
        } else {
            class.add_range(lo, hi);
        }
    };
    if !negated {
        for &(lo, hi) in group.ranges {
            add(class, lo, hi);
        }
        return;
    }
    let mut complement = CharClass::default();
    for &(lo, hi) in group.ranges {
        add(&mut complement, lo, hi);
    }
    complement.negate();
    class.add_class(&complement);
}
