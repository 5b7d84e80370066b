//! Bracketed classes, `[a-z\d[:alpha:]\pL]` and `[^...]` (`ParseCharClass`).

use crate::{
    class::CharClass,
    error::{ErrorCode, ParseError, ParseResult},
    escape::parse_escape,
    groups,
    lex::{Lexer, add_group, text},
    regexp::Flags,
};

impl Lexer<'_, '_> {
    /// The class of the `[...]` at the current position.
    pub(crate) fn char_class(&mut self) -> ParseResult<CharClass> {
        let whole = self.pos..self.runes.len();
        let missing = || ParseError::new(ErrorCode::MissingBracket, whole.clone());
        let mut class = CharClass::default();
        self.pos += 1;
        let negated = self.runes.get(self.pos) == Some(&u32::from(b'^'));
        if negated {
            self.pos += 1;
        }
        // A `]` first in the class is itself.
        let mut first = true;
        while let Some(&c) = self.runes.get(self.pos) {
            if c == u32::from(b']') && !first {
                break;
            }
            first = false;
            self.class_item(&mut class, &missing)?;
        }
        if self.pos >= self.runes.len() {
            return Err(missing());
        }
        self.pos += 1;
        if negated {
            class.negate();
        }
        Ok(class)
    }

    /// One item of a class: a POSIX or Unicode or Perl class, a character or a range.
    fn class_item(
        &mut self,
        class: &mut CharClass,
        missing: &dyn Fn() -> ParseError,
    ) -> ParseResult<()> {
        let flags = self.state.flags;
        let (c0, c1) = (self.runes[self.pos], self.runes.get(self.pos + 1).copied());
        let long = self.runes.len() - self.pos > 2;
        if long
            && c0 == u32::from(b'[')
            && c1 == Some(u32::from(b':'))
            && self.posix_class(class)?
        {
            return Ok(());
        }
        if long
            && c0 == u32::from(b'\\')
            && (c1 == Some(u32::from(b'p')) || c1 == Some(u32::from(b'P')))
        {
            return self.unicode_group(class);
        }
        if c0 == u32::from(b'\\')
            && let Some(group) = c1.and_then(groups::perl)
        {
            add_group(class, group, group.negated, flags);
            self.pos += 2;
            return Ok(());
        }
        let (lo, hi) = self.class_range(missing)?;
        if flags.has(Flags::FOLD_CASE) {
            class.add_folded_range(lo, hi);
        } else {
            class.add_range(lo, hi);
        }
        Ok(())
    }

    /// `[:name:]` or `[:^name:]` (`MaybeParseCCName`); `false` when no `:]` follows, and the
    /// `[` is then an ordinary character.
    fn posix_class(&mut self, class: &mut CharClass) -> ParseResult<bool> {
        let start = self.pos;
        let Some(end) = (start + 2..self.runes.len().saturating_sub(1))
            .find(|&q| self.runes[q] == u32::from(b':') && self.runes[q + 1] == u32::from(b']'))
        else {
            return Ok(false);
        };
        let group = groups::posix(&text(&self.runes[start + 2..end]))
            .ok_or_else(|| ParseError::new(ErrorCode::BadCharRange, start..end + 2))?;
        add_group(class, group, group.negated, self.state.flags);
        self.pos = end + 2;
        Ok(true)
    }

    /// A character, or a range `a-z` (`ParseCCRange`); `-` before `]` is itself.
    fn class_range(&mut self, missing: &dyn Fn() -> ParseError) -> ParseResult<(u32, u32)> {
        let start = self.pos;
        let lo = self.class_char(missing)?;
        let dash = self.runes.get(self.pos) == Some(&u32::from(b'-'));
        let closes = self.runes.get(self.pos + 1) == Some(&u32::from(b']'));
        if !dash || closes || self.pos + 1 >= self.runes.len() {
            return Ok((lo, lo));
        }
        self.pos += 1;
        let hi = self.class_char(missing)?;
        if hi < lo {
            return Err(ParseError::new(ErrorCode::BadCharRange, start..self.pos));
        }
        Ok((lo, hi))
    }

    /// One character of a class, escaped or not (`ParseCCCharacter`).
    fn class_char(&mut self, missing: &dyn Fn() -> ParseError) -> ParseResult<u32> {
        let Some(&c) = self.runes.get(self.pos) else {
            return Err(missing());
        };
        if c == u32::from(b'\\') {
            let (r, end) = parse_escape(self.runes, self.pos)?;
            self.pos = end;
            return Ok(r);
        }
        self.pos += 1;
        Ok(c)
    }
}
