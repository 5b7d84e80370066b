//! RE2's simplification before compiling (`simplify.cc`): runs like `a*a+a` coalesce into
//! one counted repetition (`CoalesceWalker`), then counted repetitions expand into copies
//! (`x{2,4}` is `xx(x(x)?)?`) and empty or full classes become no match or any character
//! (`SimplifyWalker`).

use crate::{
    regexp::{Flags, Id, Op, Rep, Tree},
    walk::{Pre, Visitor, walk},
};

/// The simplified form of the tree under `root`.
pub(crate) fn simplify(tree: &mut Tree, root: Id) -> Id {
    let coalesced = walk(tree, root, root, &mut Coalesce, usize::MAX);
    walk(tree, coalesced, coalesced, &mut Simplify, usize::MAX)
}

/// The node with `children` in place of its own, or the node itself when they are its own
/// (`ChildArgsChanged`).
fn rebuilt(tree: &mut Tree, id: Id, children: Vec<Id>) -> Id {
    if tree.subs(id) == children.as_slice() {
        return id;
    }
    let op = tree.op(id).with_subs(children);
    tree.add(op, tree.flags(id))
}

struct Coalesce;

impl Visitor for Coalesce {
    type Arg = Id;

    fn pre(&mut self, _: &Tree, _: Id, parent: &Id) -> Pre<Id> {
        Pre::Descend(*parent)
    }

    fn post(&mut self, tree: &mut Tree, id: Id, _: Id, mut children: Vec<Id>) -> Id {
        let coalesces =
            |tree: &Tree, c: &[Id]| (1..c.len()).any(|i| can_coalesce(tree, c[i - 1], c[i]));
        if !matches!(tree.op(id), Op::Concat(_)) || !coalesces(tree, &children) {
            return rebuilt(tree, id, children);
        }
        for i in 1..children.len() {
            if can_coalesce(tree, children[i - 1], children[i]) {
                let (first, second) = coalesce(tree, children[i - 1], children[i]);
                (children[i - 1], children[i]) = (first, second);
            }
        }
        children.retain(|&c| !matches!(tree.op(c), Op::EmptyMatch));
        tree.add(Op::Concat(children), tree.flags(id))
    }

    fn short(&mut self) -> Id {
        unreachable!("the coalescing walk has no budget")
    }
}

/// The repeated piece of a `*`, `+`, `?` or `{n,m}`, and its bounds.
fn repetition(tree: &Tree, id: Id) -> Option<(Id, i32, i32)> {
    match *tree.op(id) {
        Op::Rep(Rep::Star, sub) => Some((sub, 0, -1)),
        Op::Rep(Rep::Plus, sub) => Some((sub, 1, -1)),
        Op::Rep(Rep::Quest, sub) => Some((sub, 0, 1)),
        Op::Repeat { sub, min, max } => Some((sub, min, max)),
        _ => None,
    }
}

/// `CanCoalesce`: `r1` repeats a single character that `r2` repeats too (with the same
/// greediness), is, or begins with (a string).
fn can_coalesce(tree: &Tree, r1: Id, r2: Id) -> bool {
    let Some((sub, ..)) = repetition(tree, r1).filter(|&(s, ..)| tree.op(s).is_single_char())
    else {
        return false;
    };
    if let Some((sub2, ..)) = repetition(tree, r2)
        && tree.equal(sub, sub2)
        && tree.flags(r1).same(tree.flags(r2), Flags::NON_GREEDY)
    {
        return true;
    }
    if tree.equal(sub, r2) {
        return true;
    }
    match (tree.op(sub), tree.op(r2)) {
        (Op::Literal(r), Op::LiteralString(runes)) => {
            runes[0] == *r && tree.flags(sub).same(tree.flags(r2), Flags::FOLD_CASE)
        }
        _ => false,
    }
}

/// `DoCoalesce`: the two become one counted repetition (and an empty match, or the rest of
/// a string).
fn coalesce(tree: &mut Tree, r1: Id, r2: Id) -> (Id, Id) {
    let (sub, min, max) = repetition(tree, r1).expect("checked by can_coalesce");
    let (more_min, more_max, rest) = match (repetition(tree, r2), tree.op(r2)) {
        (Some((_, min2, max2)), _) => (min2, max2, None),
        (None, Op::LiteralString(runes)) => {
            // Only a literal coalesces with a string: as many of its runes as lead it.
            let first = runes[0];
            let n = runes.iter().take_while(|&&c| c == first).count();
            let rest = (n < runes.len()).then(|| runes[n..].to_vec());
            (n as i32, n as i32, rest)
        }
        _ => (1, 1, None),
    };
    let max = if max == -1 || more_max == -1 {
        -1
    } else {
        max + more_max
    };
    let repeat = tree.add(
        Op::Repeat {
            sub,
            min: min + more_min,
            max,
        },
        tree.flags(r1),
    );
    match rest {
        Some(runes) => {
            let flags = tree.flags(r2);
            (repeat, tree.literal_string(&runes, flags))
        }
        None => (tree.add(Op::EmptyMatch, Flags::NONE), repeat),
    }
}

struct Simplify;

impl Visitor for Simplify {
    type Arg = Id;

    fn pre(&mut self, tree: &Tree, id: Id, _: &Id) -> Pre<Id> {
        if tree.node(id).simple {
            Pre::Stop(id)
        } else {
            Pre::Descend(id)
        }
    }

    fn post(&mut self, tree: &mut Tree, id: Id, _: Id, children: Vec<Id>) -> Id {
        let result = match tree.op(id).clone() {
            Op::Rep(rep, sub) => {
                let new = children[0];
                if matches!(tree.op(new), Op::EmptyMatch) {
                    return new;
                }
                if new == sub {
                    id
                } else if matches!(tree.op(new), Op::Rep(r, _) if *r == rep)
                    && tree.flags(new) == tree.flags(id)
                {
                    return new;
                } else {
                    tree.add(Op::Rep(rep, new), tree.flags(id))
                }
            }
            Op::Repeat { min, max, .. } => {
                let new = children[0];
                if matches!(tree.op(new), Op::EmptyMatch) {
                    return new;
                }
                simplify_repeat(tree, new, min, max, tree.flags(id))
            }
            Op::CharClass { class, .. } if class.is_empty() => {
                tree.add(Op::NoMatch, tree.flags(id))
            }
            Op::CharClass { class, .. } if class.is_full() => tree.add(Op::AnyChar, tree.flags(id)),
            _ => rebuilt(tree, id, children),
        };
        tree.node_mut(result).simple = true;
        result
    }

    fn short(&mut self) -> Id {
        unreachable!("the simplifying walk has no budget")
    }
}

/// `x{min,max}` in terms of `*`, `+`, `?` and copies (`SimplifyRepeat`).
fn simplify_repeat(tree: &mut Tree, re: Id, mut min: i32, mut max: i32, f: Flags) -> Id {
    // An empty-width assertion repeated is the assertion once.
    let op = tree.op(re);
    let empty_width = op.is_empty_width()
        || (matches!(op, Op::Concat(_) | Op::Alternate(_))
            && op.subs().iter().all(|&s| tree.op(s).is_empty_width()));
    if empty_width {
        min = min.min(1);
        max = max.min(1);
    }
    if max == -1 {
        return match min {
            0 => tree.rep(Rep::Star, re, f),
            1 => tree.rep(Rep::Plus, re, f),
            _ => {
                let mut subs = vec![re; min as usize - 1];
                subs.push(tree.rep(Rep::Plus, re, f));
                tree.concat(subs, f)
            }
        };
    }
    if min == 0 && max == 0 {
        return tree.add(Op::EmptyMatch, f);
    }
    if min == 1 && max == 1 {
        return re;
    }
    let prefix = (min > 0).then(|| tree.concat(vec![re; min as usize], f));
    let suffix = (max > min).then(|| {
        let mut suffix = tree.rep(Rep::Quest, re, f);
        for _ in min + 1..max {
            let pair = tree.add(Op::Concat(vec![re, suffix]), f);
            suffix = tree.rep(Rep::Quest, pair, f);
        }
        suffix
    });
    match (prefix, suffix) {
        (Some(p), Some(s)) => tree.add(Op::Concat(vec![p, s]), f),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => tree.add(Op::NoMatch, f),
    }
}
