//! RE2's factoring of an alternation (`FactorAlternation`): `abc|abd|aef|bcx|bcy` becomes
//! `a(?:b[cd]|ef)|bc[xy]`, in three rounds: common literal prefixes, common leading simple
//! pieces, then runs of single characters merged into one class. Each factored group of
//! alternatives is factored again the same way.

use crate::{
    class::CharClass,
    regexp::{Flags, Id, Op, Tree},
};

/// The alternatives of an alternation, factored.
pub(crate) fn factor_alternation(tree: &mut Tree, subs: Vec<Id>, flags: Flags) -> Vec<Id> {
    let subs = common_literal_prefixes(tree, subs, flags);
    let subs = common_leading_pieces(tree, subs, flags);
    merge_single_characters(tree, subs, flags)
}

/// `prefix` followed by the factored alternation of `suffixes`.
fn prefixed(tree: &mut Tree, prefix: Id, suffixes: Vec<Id>, flags: Flags) -> Id {
    let suffixes = factor_alternation(tree, suffixes, flags);
    let alternation = tree.concat_or_alternate(true, suffixes, flags, false);
    tree.concat(vec![prefix, alternation], flags)
}

/// Round 1: alternatives that begin with the same literal runes share them.
fn common_literal_prefixes(tree: &mut Tree, subs: Vec<Id>, flags: Flags) -> Vec<Id> {
    let mut out = Vec::with_capacity(subs.len());
    let (mut start, mut prefix, mut prefix_flags) = (0, Vec::new(), Flags::NONE);
    for i in 0..=subs.len() {
        let mut next = None;
        if let Some(&sub) = subs.get(i) {
            let (runes, runes_flags) = leading_string(tree, sub);
            let same = prefix
                .iter()
                .zip(&runes)
                .take_while(|(a, b)| a == b)
                .count();
            if runes_flags == prefix_flags && same > 0 {
                prefix.truncate(same);
                continue;
            }
            next = Some((runes, runes_flags));
        }
        match &subs[start..i] {
            [] => {}
            [one] => out.push(*one),
            run => {
                let literal = tree.literal_string(&prefix, prefix_flags);
                for &sub in run {
                    remove_leading_string(tree, sub, prefix.len());
                }
                out.push(prefixed(tree, literal, run.to_vec(), flags));
            }
        }
        if let Some((runes, runes_flags)) = next {
            (start, prefix, prefix_flags) = (i, runes, runes_flags);
        }
    }
    out
}

/// The literal runes a regexp begins with, and their case folding (`LeadingString`).
fn leading_string(tree: &Tree, mut id: Id) -> (Vec<u32>, Flags) {
    while let Op::Concat(subs) = tree.op(id)
        && let Some(&first) = subs.first()
    {
        id = first;
    }
    let flags = tree.flags(id).only(Flags::FOLD_CASE | Flags::LATIN1);
    let runes = match tree.op(id) {
        Op::Literal(r) => vec![*r],
        Op::LiteralString(runes) => runes.clone(),
        _ => Vec::new(),
    };
    (runes, flags)
}

/// Removes the first `n` runes a regexp begins with, in place (`RemoveLeadingString`).
fn remove_leading_string(tree: &mut Tree, mut id: Id, n: usize) {
    // RE2 remembers at most four concatenations on the way down.
    let mut concats = Vec::new();
    while let Op::Concat(subs) = tree.op(id) {
        if concats.len() < 4 {
            concats.push(id);
        }
        id = subs[0];
    }
    let op = &mut tree.node_mut(id).op;
    match op {
        Op::Literal(_) => *op = Op::EmptyMatch,
        Op::LiteralString(runes) if n >= runes.len() => *op = Op::EmptyMatch,
        Op::LiteralString(runes) if n + 1 == runes.len() => *op = Op::Literal(runes[n]),
        Op::LiteralString(runes) => {
            runes.drain(..n);
        }
        _ => {}
    }
    // Concatenations that now begin with an empty match lose it.
    while let Some(concat) = concats.pop() {
        let subs = tree.subs(concat).to_vec();
        if !matches!(tree.op(subs[0]), Op::EmptyMatch) {
            continue;
        }
        if let [_, only] = subs[..] {
            let replacement = tree.node(only).clone();
            *tree.node_mut(concat) = replacement;
        } else {
            tree.node_mut(concat).op = Op::Concat(subs[1..].to_vec());
        }
    }
}

/// Round 2: alternatives that begin with the same simple piece (an empty-width assertion,
/// a class, any character or byte, or a fixed repeat of one) share it.
fn common_leading_pieces(tree: &mut Tree, subs: Vec<Id>, flags: Flags) -> Vec<Id> {
    let mut out = Vec::with_capacity(subs.len());
    let (mut start, mut first) = (0, None);
    for i in 0..=subs.len() {
        let mut first_i = None;
        if let Some(&sub) = subs.get(i) {
            first_i = leading_regexp(tree, sub);
            if let (Some(f), Some(fi)) = (first, first_i)
                && factorable(tree, f)
                && tree.equal(f, fi)
            {
                continue;
            }
        }
        match &subs[start..i] {
            [] => {}
            [one] => out.push(*one),
            run => {
                let prefix = first.expect("a run of two or more shares its first piece");
                let suffixes = run
                    .iter()
                    .map(|&s| remove_leading_regexp(tree, s))
                    .collect();
                out.push(prefixed(tree, prefix, suffixes, flags));
            }
        }
        if i < subs.len() {
            (start, first) = (i, first_i);
        }
    }
    out
}

/// Whether a leading piece may be factored out of alternatives.
fn factorable(tree: &Tree, id: Id) -> bool {
    match tree.op(id) {
        Op::Repeat { sub, min, max } => min == max && tree.op(*sub).is_single_char(),
        op => op.is_empty_width() || matches!(op, Op::CharClass { .. } | Op::AnyChar | Op::AnyByte),
    }
}

/// The piece a regexp begins with (`LeadingRegexp`); none for an empty match.
fn leading_regexp(tree: &Tree, id: Id) -> Option<Id> {
    match tree.op(id) {
        Op::EmptyMatch => None,
        Op::Concat(subs) if subs.len() >= 2 => {
            (!matches!(tree.op(subs[0]), Op::EmptyMatch)).then_some(subs[0])
        }
        _ => Some(id),
    }
}

/// What follows the leading piece (`RemoveLeadingRegexp`).
fn remove_leading_regexp(tree: &mut Tree, id: Id) -> Id {
    match tree.op(id) {
        Op::EmptyMatch => id,
        Op::Concat(subs) if subs.len() >= 2 => {
            if matches!(tree.op(subs[0]), Op::EmptyMatch) {
                return id;
            }
            if let [_, second] = subs[..] {
                return second;
            }
            let rest = subs[1..].to_vec();
            tree.node_mut(id).op = Op::Concat(rest);
            id
        }
        _ => tree.add(Op::EmptyMatch, tree.flags(id)),
    }
}

/// Round 3: runs of literals and classes become one class.
fn merge_single_characters(tree: &mut Tree, subs: Vec<Id>, flags: Flags) -> Vec<Id> {
    let mut out = Vec::with_capacity(subs.len());
    let mut start = 0;
    for i in 0..=subs.len() {
        if let Some(&sub) = subs.get(i)
            && matches!(tree.op(sub), Op::Literal(_) | Op::CharClass { .. })
        {
            continue;
        }
        match &subs[start..i] {
            [] => {}
            [one] => out.push(*one),
            run => {
                let class = merged_class(tree, run);
                let id = tree.add(
                    Op::CharClass { class, open: false },
                    flags.without(Flags::FOLD_CASE),
                );
                out.push(id);
            }
        }
        out.extend(subs.get(i));
        start = i + 1;
    }
    out
}

fn merged_class(tree: &Tree, run: &[Id]) -> CharClass {
    let mut merged = CharClass::default();
    for &id in run {
        match tree.op(id) {
            Op::CharClass { class, .. } => merged.add_class(class),
            Op::Literal(r) if tree.flags(id).has(Flags::FOLD_CASE) => {
                merged.add_folded_range(*r, *r);
            }
            Op::Literal(r) => merged.add_range(*r, *r),
            _ => unreachable!("a run holds literals and classes only"),
        }
    }
    merged
}
