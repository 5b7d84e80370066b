//! RE2's tree walker (`Regexp::Walker`) with its own stack, so that no pattern, however
//! deeply nested, can exhaust the thread's: `pre` sees a node before its children (and may
//! stop the walk there), `post` combines its children's results.

use crate::regexp::{Id, Op, Tree};

/// What `pre` decides for a node.
pub(crate) enum Pre<A> {
    /// Walk the children, handing them this.
    Descend(A),
    /// Skip the children and `post`: this is the node's result.
    Stop(A),
}

/// A computation over a tree.
pub(crate) trait Visitor {
    type Arg: Clone;

    fn pre(&mut self, tree: &Tree, id: Id, parent: &Self::Arg) -> Pre<Self::Arg>;

    fn post(
        &mut self,
        tree: &mut Tree,
        id: Id,
        pre: Self::Arg,
        children: Vec<Self::Arg>,
    ) -> Self::Arg;

    /// A node's result once the walk's budget of visits is spent.
    fn short(&mut self) -> Self::Arg;
}

struct Frame<A> {
    id: Id,
    pre: A,
    children: Vec<A>,
}

/// Walks the tree under `root`, visiting at most `budget` nodes (RE2's `max_visits`).
pub(crate) fn walk<V: Visitor>(
    tree: &mut Tree,
    root: Id,
    top: V::Arg,
    v: &mut V,
    mut budget: usize,
) -> V::Arg {
    let mut stack: Vec<Frame<V::Arg>> = Vec::new();
    let mut entering = Some((root, top));
    loop {
        let mut done = None;
        if let Some((id, parent)) = entering.take() {
            if budget == 0 {
                done = Some(v.short());
            } else {
                budget -= 1;
                match v.pre(tree, id, &parent) {
                    Pre::Stop(arg) => done = Some(arg),
                    Pre::Descend(pre) => stack.push(Frame {
                        id,
                        pre,
                        children: Vec::new(),
                    }),
                }
            }
        }
        if done.is_none() {
            let frame = stack.last().expect("a node is being walked");
            if let Some(&next) = tree.subs(frame.id).get(frame.children.len()) {
                entering = Some((next, frame.pre.clone()));
                continue;
            }
            let frame = stack.pop().expect("a node is being walked");
            done = Some(v.post(tree, frame.id, frame.pre, frame.children));
        }
        let arg = done.expect("the node is done");
        match stack.last_mut() {
            Some(parent) => parent.children.push(arg),
            None => return arg,
        }
    }
}

/// RE2's budget of a repetition (`RepetitionWalker`): `budget` divided by the count of every
/// counted repetition on the way down, the smallest over all paths. Zero means the nested
/// counts multiply beyond `budget`, which RE2 refuses.
pub(crate) fn repetition_budget(tree: &mut Tree, root: Id, budget: i32) -> i32 {
    walk(tree, root, budget, &mut RepetitionBudget, usize::MAX)
}

struct RepetitionBudget;

impl Visitor for RepetitionBudget {
    type Arg = i32;

    fn pre(&mut self, tree: &Tree, id: Id, parent: &i32) -> Pre<i32> {
        let mut arg = *parent;
        if let Op::Repeat { min, max, .. } = tree.op(id) {
            let m = if *max < 0 { *min } else { *max };
            if m > 0 {
                arg /= m;
            }
        }
        Pre::Descend(arg)
    }

    fn post(&mut self, _: &mut Tree, _: Id, pre: i32, children: Vec<i32>) -> i32 {
        children.into_iter().fold(pre, i32::min)
    }

    fn short(&mut self) -> i32 {
        0
    }
}
