//! RE2's parse state (`Regexp::ParseState` in `parse.cc`): a stack of parsed pieces and the
//! markers of open groups and alternations, reduced as RE2 reduces it. Its shortcuts change
//! the tree, and so the program size: adjacent literals become a string, a one-rune class a
//! literal, `[Aa]` a case-folded `a`, `(?:x*)*` a single star, an alternation has its common
//! prefixes factored out.

use std::ops::Range;

use crate::{
    class::CharClass,
    error::{ErrorCode, ParseError, ParseResult},
    regexp::{Flags, Id, Op, Rep, Tree},
};

/// The largest rune of Latin-1, and so of every pattern Envoy gives RE2.
pub(crate) const RUNE_MAX_LATIN1: u32 = 0xFF;

/// RE2's limit on a counted repetition (`{n,m}`), also on the product of nested ones.
const MAX_REPEAT: i32 = 1000;

/// The parse state.
pub(crate) struct ParseState<'t> {
    pub(crate) tree: &'t mut Tree,
    stack: Vec<Id>,
    pub(crate) flags: Flags,
    ncap: i32,
    /// The whole pattern's span, which some errors name.
    whole: Range<usize>,
}

impl<'t> ParseState<'t> {
    pub(crate) fn new(tree: &'t mut Tree, len: usize) -> ParseState<'t> {
        ParseState {
            tree,
            stack: Vec::new(),
            flags: Flags::ENVOY,
            ncap: 0,
            whole: 0..len,
        }
    }

    fn top(&self) -> Option<Id> {
        self.stack.last().copied()
    }

    fn is_marker(&self, id: Id) -> bool {
        self.tree.op(id).is_marker()
    }

    /// A new class with the current flags but case folding (`flags_ & ~FoldCase`).
    pub(crate) fn new_class(&mut self, class: CharClass) -> Id {
        let flags = self.flags.without(Flags::FOLD_CASE);
        self.tree.add(Op::CharClass { class, open: true }, flags)
    }

    /// `FinishRegexp`: a class the parser will not change again is closed.
    fn finish(&mut self, id: Id) -> Id {
        if let Op::CharClass { open, .. } = &mut self.tree.node_mut(id).op {
            *open = false;
        }
        id
    }

    /// `PushRegexp`: a one-rune class becomes a literal, `[Aa]` a case-folded `a`.
    pub(crate) fn push_regexp(&mut self, id: Id) {
        self.maybe_concat_string(None);
        if let Some((r, flags)) = self.class_as_literal(id) {
            let node = self.tree.node_mut(id);
            node.op = Op::Literal(r);
            node.flags = flags;
        }
        if !self.is_marker(id) {
            self.tree.node_mut(id).simple = self.tree.compute_simple(id);
        }
        self.stack.push(id);
    }

    /// The literal an open class stands for, cut to Latin-1 first: its one rune, or for
    /// `[Aa]` the lower case with case folding.
    fn class_as_literal(&mut self, id: Id) -> Option<(u32, Flags)> {
        let flags = self.flags;
        let Op::CharClass { class, open: true } = &mut self.tree.node_mut(id).op else {
            return None;
        };
        class.remove_above(RUNE_MAX_LATIN1);
        let &(r, _) = class.ranges().first()?;
        let upper = (u32::from(b'A')..=u32::from(b'Z')).contains(&r);
        match class.size() {
            1 => Some((r, flags)),
            2 if upper && class.contains(r + 32) => Some((r + 32, flags.with(Flags::FOLD_CASE))),
            _ => None,
        }
    }

    /// `PushLiteral`: with `(?i)` an ASCII letter is the class of both cases.
    pub(crate) fn push_literal(&mut self, r: u32) {
        if self.flags.has(Flags::FOLD_CASE)
            && char::from_u32(r).is_some_and(|c| c.is_ascii_alphabetic())
        {
            let mut class = CharClass::default();
            class.add_folded_range(r, r);
            let id = self.new_class(class);
            self.push_regexp(id);
            return;
        }
        if self.maybe_concat_string(Some((r, self.flags))) {
            return;
        }
        let id = self.tree.add(Op::Literal(r), self.flags);
        self.push_regexp(id);
    }

    /// `MaybeConcatString`: the two literals on top become one string; with `next`, the top
    /// is reused for that new literal (and `true` says so).
    fn maybe_concat_string(&mut self, next: Option<(u32, Flags)>) -> bool {
        let [.., re2, re1] = self.stack[..] else {
            return false;
        };
        let is_literal = |op: &Op| matches!(op, Op::Literal(_) | Op::LiteralString(_));
        if !is_literal(self.tree.op(re1))
            || !is_literal(self.tree.op(re2))
            || !self
                .tree
                .flags(re1)
                .same(self.tree.flags(re2), Flags::FOLD_CASE)
        {
            return false;
        }
        let moved = match std::mem::replace(&mut self.tree.node_mut(re1).op, Op::EmptyMatch) {
            Op::Literal(r) => vec![r],
            Op::LiteralString(runes) => runes,
            _ => unreachable!("checked to be a literal"),
        };
        let into = &mut self.tree.node_mut(re2).op;
        match into {
            Op::Literal(r) => *into = Op::LiteralString([vec![*r], moved].concat()),
            Op::LiteralString(runes) => runes.extend(moved),
            _ => unreachable!("checked to be a literal"),
        }
        match next {
            Some((r, flags)) => {
                let node = self.tree.node_mut(re1);
                node.op = Op::Literal(r);
                node.flags = flags;
                true
            }
            None => {
                self.stack.pop();
                false
            }
        }
    }

    /// Pushes an operator that has no children.
    pub(crate) fn push_simple(&mut self, op: Op) {
        let id = self.tree.add(op, self.flags);
        self.push_regexp(id);
    }

    /// `^`: the start of the text, or of a line under `(?m)`.
    pub(crate) fn push_caret(&mut self) {
        let op = if self.flags.has(Flags::ONE_LINE) {
            Op::BeginText
        } else {
            Op::BeginLine
        };
        self.push_simple(op);
    }

    /// `$`: the end of the text (remembered as a `$`), or of a line under `(?m)`.
    pub(crate) fn push_dollar(&mut self) {
        if self.flags.has(Flags::ONE_LINE) {
            let id = self
                .tree
                .add(Op::EndText, self.flags.with(Flags::WAS_DOLLAR));
            self.push_regexp(id);
        } else {
            self.push_simple(Op::EndLine);
        }
    }

    /// `.`: any character, or any but a newline (a class) without `(?s)`.
    pub(crate) fn push_dot(&mut self) {
        if self.flags.has(Flags::DOT_NL) {
            return self.push_simple(Op::AnyChar);
        }
        let mut class = CharClass::range(0, 9);
        class.add_range(11, RUNE_MAX_LATIN1);
        let id = self.new_class(class);
        self.push_regexp(id);
    }

    /// The operand of a repetition: the piece on top, unless there is none.
    fn operand(&self, span: &Range<usize>) -> ParseResult<Id> {
        self.top()
            .filter(|&id| !self.is_marker(id))
            .ok_or_else(|| ParseError::new(ErrorCode::RepeatArgument, span.clone()))
    }

    /// `*`, `+` or `?` on the piece on top (`PushRepeatOp`); `**` and mixed pairs squash.
    pub(crate) fn push_rep(
        &mut self,
        rep: Rep,
        span: Range<usize>,
        nongreedy: bool,
    ) -> ParseResult<()> {
        let top = self.operand(&span)?;
        let flags = if nongreedy {
            self.flags.toggle(Flags::NON_GREEDY)
        } else {
            self.flags
        };
        if self.tree.flags(top) == flags
            && let Op::Rep(inner, _) = &mut self.tree.node_mut(top).op
        {
            if *inner != rep {
                *inner = Rep::Star;
            }
            return Ok(());
        }
        let sub = self.finish(top);
        let id = self.tree.add(Op::Rep(rep, sub), flags);
        self.replace_top(id);
        Ok(())
    }

    /// `{min,max}` on the piece on top (`PushRepetition`; `max` -1: unbounded).
    pub(crate) fn push_repeat(
        &mut self,
        min: i32,
        max: i32,
        span: Range<usize>,
        nongreedy: bool,
    ) -> ParseResult<()> {
        if (max != -1 && max < min) || min > MAX_REPEAT || max > MAX_REPEAT {
            return Err(ParseError::new(ErrorCode::RepeatSize, span));
        }
        let top = self.operand(&span)?;
        let flags = if nongreedy {
            self.flags.toggle(Flags::NON_GREEDY)
        } else {
            self.flags
        };
        let sub = self.finish(top);
        let id = self.tree.add(Op::Repeat { sub, min, max }, flags);
        self.replace_top(id);
        if (min >= 2 || max >= 2) && crate::walk::repetition_budget(self.tree, id, MAX_REPEAT) == 0
        {
            return Err(ParseError::new(ErrorCode::RepeatSize, span));
        }
        Ok(())
    }

    fn replace_top(&mut self, id: Id) {
        self.tree.node_mut(id).simple = self.tree.compute_simple(id);
        if let Some(top) = self.stack.last_mut() {
            *top = id;
        }
    }

    /// `(`: a capture group (named or not); `cap` -1 for `(?:`.
    pub(crate) fn push_left_paren(&mut self, name: Option<String>, capture: bool) {
        let cap = if capture {
            self.ncap += 1;
            self.ncap
        } else {
            -1
        };
        let id = self.tree.add(Op::LeftParen { cap, name }, self.flags);
        self.push_regexp(id);
    }

    /// `|` (`DoVerticalBar`): the pieces since the last marker become one concatenation,
    /// kept below the bar with the alternatives before it. A `(?s).` beside a literal or a
    /// class swallows it.
    pub(crate) fn push_vertical_bar(&mut self) {
        self.maybe_concat_string(None);
        self.concatenate();
        let n = self.stack.len();
        if n >= 2 && matches!(self.tree.op(self.stack[n - 2]), Op::VerticalBar) {
            let r1 = self.stack[n - 1];
            if n >= 3 {
                let r3 = self.stack[n - 3];
                let swallows = |by: &Op, other: &Op| {
                    matches!(by, Op::AnyChar)
                        && matches!(other, Op::Literal(_) | Op::CharClass { .. } | Op::AnyChar)
                };
                if swallows(self.tree.op(r3), self.tree.op(r1)) {
                    self.stack.pop();
                    return;
                }
                if swallows(self.tree.op(r1), self.tree.op(r3)) {
                    self.stack[n - 3] = r1;
                    self.stack.pop();
                    return;
                }
            }
            self.stack.swap(n - 1, n - 2);
            return;
        }
        self.push_simple(Op::VerticalBar);
    }

    /// `)` (`DoRightParen`).
    pub(crate) fn push_right_paren(&mut self) -> ParseResult<()> {
        self.alternate();
        let n = self.stack.len();
        let paren = match self
            .stack
            .get(n.wrapping_sub(2))
            .map(|&id| self.tree.op(id))
        {
            Some(Op::LeftParen { cap, name }) => (*cap, name.clone()),
            _ => {
                return Err(ParseError::new(
                    ErrorCode::UnexpectedParen,
                    self.whole.clone(),
                ));
            }
        };
        let (r1, r2) = (self.stack[n - 1], self.stack[n - 2]);
        self.stack.truncate(n - 2);
        self.flags = self.tree.flags(r2);
        let (cap, name) = paren;
        if cap > 0 {
            let sub = self.finish(r1);
            let node = self.tree.node_mut(r2);
            node.op = Op::Capture { sub, cap, name };
            self.tree.node_mut(r2).simple = self.tree.compute_simple(r2);
            self.push_regexp(r2);
        } else {
            self.push_regexp(r1);
        }
        Ok(())
    }

    /// The end of the pattern (`DoFinish`): the whole regexp, unless a group is still open.
    pub(crate) fn finish_pattern(mut self) -> ParseResult<Id> {
        self.alternate();
        match self.stack[..] {
            [re] => Ok(self.finish(re)),
            _ => Err(ParseError::new(ErrorCode::MissingParen, self.whole.clone())),
        }
    }

    /// `DoConcatenation`: an empty concatenation is an empty match.
    fn concatenate(&mut self) {
        if self.top().is_none_or(|id| self.is_marker(id)) {
            self.push_simple(Op::EmptyMatch);
        }
        self.collapse(false);
    }

    /// `DoAlternation`.
    fn alternate(&mut self) {
        self.push_vertical_bar();
        self.stack.pop();
        self.collapse(true);
    }

    /// `DoCollapse`: the pieces above the last marker become one concatenation or
    /// alternation, flattening pieces of the same kind.
    fn collapse(&mut self, alternate: bool) {
        let start = self
            .stack
            .iter()
            .rposition(|&id| self.is_marker(id))
            .map_or(0, |i| i + 1);
        if self.stack.len() - start == 1 {
            return;
        }
        let mut subs = Vec::new();
        for id in self.stack.split_off(start) {
            match self.tree.op(id) {
                Op::Alternate(inner) if alternate => subs.extend_from_slice(inner),
                Op::Concat(inner) if !alternate => subs.extend_from_slice(inner),
                _ => subs.push(self.finish(id)),
            }
        }
        let id = self
            .tree
            .concat_or_alternate(alternate, subs, self.flags, true);
        self.tree.node_mut(id).simple = self.tree.compute_simple(id);
        self.stack.push(id);
    }
}
