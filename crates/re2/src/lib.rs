//! RE2 as Envoy runs it, in pure Rust: whether RE2 takes a pattern, and the size of the
//! program it compiles it to, which Envoy checks against a limit
//! (`re2.max_program_size.error_level`, 100 unless set) and refuses above it.
//!
//! This follows RE2 step by step (parse, simplify, compile, optimize, flatten) with the
//! options Envoy gives it: Perl syntax, case-sensitive, and Latin-1, so a pattern is read
//! byte by byte (Envoy 1.40's RE2 runs in Latin-1: `(?s).` compiles to one byte range and
//! `.` matches one byte of a UTF-8 header). It is proven against Envoy on a corpus
//! (`tests/corpus.rs`, `tests/envoy.rs`); RE2 is not linked, so nothing here needs C++.
//!
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bracket;
mod class;
mod compile;
mod error;
mod escape;
mod factor;
mod flatten;
mod groups;
mod lex;
mod parse;
mod prog;
mod regexp;
mod simplify;
mod walk;

pub use error::{ErrorCode, SyntaxError};

use regexp::{Id, Op, Tree};

/// Envoy's default for `re2.max_program_size.error_level`: a regex whose program is larger
/// is refused.
pub const DEFAULT_MAX_PROGRAM_SIZE: u32 = 100;

/// Why Envoy would refuse a pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// RE2 cannot parse it.
    #[error("RE2 cannot parse it ({0})")]
    Syntax(#[from] SyntaxError),
    /// RE2 runs out of the instructions Envoy's memory setting allows while compiling it
    /// ("pattern too large - compile failed").
    #[error("RE2 cannot compile it within the memory Envoy gives it")]
    TooComplex,
    /// Its program is larger than the limit.
    #[error("its RE2 program size {size} exceeds the limit {limit}")]
    TooLarge {
        /// The program size.
        size: u32,
        /// The limit.
        limit: u32,
    },
}

/// The program size RE2 gives `pattern` in Envoy; an error says why an Envoy whose program
/// size limit is `limit` would refuse it.
pub fn program_size(pattern: &str, limit: u32) -> Result<u32, Error> {
    let size = measure(pattern)?;
    if size > limit {
        return Err(Error::TooLarge { size, limit });
    }
    Ok(size)
}

/// The program size RE2 gives `pattern` in Envoy, whatever the limit.
pub fn measure(pattern: &str) -> Result<u32, Error> {
    let runes: Vec<u32> = pattern.bytes().map(u32::from).collect();
    let mut tree = Tree::default();
    let parsed = lex::parse(&mut tree, &runes).map_err(|e| e.describe(pattern))?;
    let suffix = without_required_prefix(&mut tree, parsed);
    let mut prog =
        compile::compile(&mut tree, suffix, MAX_INSTRUCTIONS).ok_or(Error::TooComplex)?;
    prog.optimize();
    Ok(u32::try_from(flatten::flattened_size(&prog)).unwrap_or(u32::MAX))
}

/// What RE2 compiles (`RE2::Init` with `RequiredPrefix`): a pattern that starts with `^`
/// and a literal is matched by comparing the literal, and only the rest is compiled.
fn without_required_prefix(tree: &mut Tree, re: Id) -> Id {
    let Op::Concat(subs) = tree.op(re) else {
        return re;
    };
    let anchors = subs
        .iter()
        .take_while(|&&s| matches!(tree.op(s), Op::BeginText))
        .count();
    if anchors == 0 || anchors >= subs.len() {
        return re;
    }
    if !matches!(
        tree.op(subs[anchors]),
        Op::Literal(_) | Op::LiteralString(_)
    ) {
        return re;
    }
    let rest = subs[anchors + 1..].to_vec();
    let flags = tree.flags(re);
    if rest.is_empty() {
        tree.add(Op::EmptyMatch, flags)
    } else {
        tree.concat(rest, flags)
    }
}

/// The instructions RE2 may allocate while compiling for Envoy (`Compiler::Setup`): Envoy
/// leaves RE2's memory budget at its default, 8 MiB, two thirds of which go to the forward
/// program, less the program's header, in 8-byte instructions:
/// `(5_592_405 − sizeof(Prog)) / 8`. Measured on Envoy 1.40: a program of 698,996
/// instructions compiles, one more does not, whatever the program size limit.
const MAX_INSTRUCTIONS: usize = 698_996;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_small_patterns_are_envoys() {
        for (pattern, size) in [
            ("abc", 7),
            ("^abc", 4),
            ("^abc$", 4),
            ("/v[0-9]+/.*", 11),
            ("a", 5),
            (".*", 6),
            ("(?i)abc", 7),
            ("a|b|c", 5),
            ("\\pL", 11),
            ("\\p{Greek}", 1),
            ("(?s).", 5),
            ("(a)", 7),
            ("a+", 6),
            ("a?", 6),
        ] {
            assert_eq!(measure(pattern), Ok(size), "{pattern}");
        }
    }

    #[test]
    fn the_issues_pattern_is_refused_for_its_size() {
        let pattern = format!("/({}){{1,20}}", "a{1,50}b{1,50}".repeat(2));
        assert!(matches!(
            program_size(&pattern, DEFAULT_MAX_PROGRAM_SIZE),
            Err(Error::TooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn syntax_errors_are_re2s() {
        let err = program_size("/api/(v1|v2", 100).expect_err("unbalanced");
        assert_eq!(
            err.to_string(),
            "RE2 cannot parse it (missing ): /api/(v1|v2)"
        );
        let err = program_size("\\x{178}", 100).expect_err("beyond Latin-1");
        assert_eq!(
            err.to_string(),
            "RE2 cannot parse it (invalid escape sequence: \\x{178)"
        );
        assert!(program_size("^(?!bot).*", 100).is_err());
    }
}
