//! The parsed form of a pattern as RE2 holds it (`regexp.h`): a tree of nodes. Nodes live in
//! an arena and name their children by index, so a subtree may be shared the way RE2 shares
//! one by reference count (a counted repetition repeats the same node).

use crate::class::CharClass;

/// A node's place in its [`Tree`].
pub(crate) type Id = usize;

/// RE2's parse flags, with RE2's bits (`Regexp::ParseFlags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    pub(crate) const NONE: Flags = Flags(0);
    pub(crate) const FOLD_CASE: u16 = 1;
    const CLASS_NL: u16 = 1 << 2;
    pub(crate) const DOT_NL: u16 = 1 << 3;
    pub(crate) const ONE_LINE: u16 = 1 << 4;
    pub(crate) const LATIN1: u16 = 1 << 5;
    pub(crate) const NON_GREEDY: u16 = 1 << 6;
    const PERL_CLASSES: u16 = 1 << 7;
    const PERL_B: u16 = 1 << 8;
    const PERL_X: u16 = 1 << 9;
    const UNICODE_GROUPS: u16 = 1 << 10;
    pub(crate) const WAS_DOLLAR: u16 = 1 << 13;

    /// What Envoy's options give a pattern (`RE2::Options::ParseFlags` of its Latin-1,
    /// non-POSIX options): Perl's syntax, `^`/`$` at the ends of the text, classes that may
    /// match a newline. Of these, the parser only looks at the flags a pattern can change.
    pub(crate) const ENVOY: Flags = Flags(
        Self::CLASS_NL
            | Self::ONE_LINE
            | Self::LATIN1
            | Self::PERL_CLASSES
            | Self::PERL_B
            | Self::PERL_X
            | Self::UNICODE_GROUPS,
    );

    pub(crate) fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    pub(crate) fn with(self, bit: u16) -> Flags {
        Flags(self.0 | bit)
    }

    pub(crate) fn without(self, bit: u16) -> Flags {
        Flags(self.0 & !bit)
    }

    pub(crate) fn toggle(self, bit: u16) -> Flags {
        Flags(self.0 ^ bit)
    }

    /// Only the given bits.
    pub(crate) fn only(self, bits: u16) -> Flags {
        Flags(self.0 & bits)
    }

    /// Whether `bit` is the same in both.
    pub(crate) fn same(self, other: Flags, bit: u16) -> bool {
        (self.0 ^ other.0) & bit == 0
    }
}

/// Star, plus or quest: the three repetition operators without counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rep {
    Star,
    Plus,
    Quest,
}

/// What a node is (RE2's `RegexpOp`), with its children and data.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    NoMatch,
    EmptyMatch,
    Literal(u32),
    LiteralString(Vec<u32>),
    Concat(Vec<Id>),
    Alternate(Vec<Id>),
    Rep(Rep, Id),
    Repeat {
        sub: Id,
        min: i32,
        max: i32,
    },
    Capture {
        sub: Id,
        cap: i32,
        name: Option<String>,
    },
    AnyChar,
    AnyByte,
    BeginLine,
    EndLine,
    WordBoundary,
    NoWordBoundary,
    BeginText,
    EndText,
    /// `open` while the parser may still change it (RE2's `ccb_`), until it is finished into
    /// its final form (`cc_`).
    CharClass {
        class: CharClass,
        open: bool,
    },
    /// The parser's marker for `(`: the group's capture index (-1: none) and name.
    LeftParen {
        cap: i32,
        name: Option<String>,
    },
    /// The parser's marker for `|`.
    VerticalBar,
}

impl Op {
    /// The children.
    pub(crate) fn subs(&self) -> &[Id] {
        match self {
            Op::Concat(subs) | Op::Alternate(subs) => subs,
            Op::Rep(_, sub) | Op::Repeat { sub, .. } | Op::Capture { sub, .. } => {
                std::slice::from_ref(sub)
            }
            _ => &[],
        }
    }

    /// The same node with other children (as many as it has).
    pub(crate) fn with_subs(&self, subs: Vec<Id>) -> Op {
        match self {
            Op::Concat(_) => Op::Concat(subs),
            Op::Alternate(_) => Op::Alternate(subs),
            Op::Rep(rep, _) => Op::Rep(*rep, subs[0]),
            Op::Repeat { min, max, .. } => Op::Repeat {
                sub: subs[0],
                min: *min,
                max: *max,
            },
            Op::Capture { cap, name, .. } => Op::Capture {
                sub: subs[0],
                cap: *cap,
                name: name.clone(),
            },
            other => other.clone(),
        }
    }

    pub(crate) fn is_marker(&self) -> bool {
        matches!(self, Op::LeftParen { .. } | Op::VerticalBar)
    }

    /// An empty-width assertion (`^`, `$`, `\b`, `\B`, `\A`, `\z`).
    pub(crate) fn is_empty_width(&self) -> bool {
        matches!(
            self,
            Op::BeginLine
                | Op::EndLine
                | Op::WordBoundary
                | Op::NoWordBoundary
                | Op::BeginText
                | Op::EndText
        )
    }

    /// A literal, a class, any character or any byte: what RE2 coalesces and factors.
    pub(crate) fn is_single_char(&self) -> bool {
        matches!(
            self,
            Op::Literal(_) | Op::CharClass { .. } | Op::AnyChar | Op::AnyByte
        )
    }
}

/// One node: what it is, its flags, and whether RE2 has judged it simple (`simple_`).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) op: Op,
    pub(crate) flags: Flags,
    pub(crate) simple: bool,
}

/// Every node of one pattern.
#[derive(Default)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
}

/// RE2's limit on the children of one node (`kMaxNsub`); more make a two-level tree.
const MAX_SUBS: usize = 0xFFFF;

impl Tree {
    /// A new node, not (yet) judged simple.
    pub(crate) fn add(&mut self, op: Op, flags: Flags) -> Id {
        self.nodes.push(Node {
            op,
            flags,
            simple: false,
        });
        self.nodes.len() - 1
    }

    pub(crate) fn node(&self, id: Id) -> &Node {
        &self.nodes[id]
    }

    pub(crate) fn node_mut(&mut self, id: Id) -> &mut Node {
        &mut self.nodes[id]
    }

    pub(crate) fn op(&self, id: Id) -> &Op {
        &self.nodes[id].op
    }

    pub(crate) fn flags(&self, id: Id) -> Flags {
        self.nodes[id].flags
    }

    pub(crate) fn subs(&self, id: Id) -> &[Id] {
        self.nodes[id].op.subs()
    }

    /// A literal string: empty match, one literal, or a string (`Regexp::LiteralString`).
    pub(crate) fn literal_string(&mut self, runes: &[u32], flags: Flags) -> Id {
        match runes {
            [] => self.add(Op::EmptyMatch, flags),
            [r] => self.add(Op::Literal(*r), flags),
            _ => self.add(Op::LiteralString(runes.to_vec()), flags),
        }
    }

    /// `Regexp::Concat` without factoring.
    pub(crate) fn concat(&mut self, subs: Vec<Id>, flags: Flags) -> Id {
        self.concat_or_alternate(false, subs, flags, false)
    }

    /// `Regexp::ConcatOrAlternate`: one child is itself, none is an empty match (concat) or
    /// no match (alternate); an alternation may have its common prefixes factored.
    pub(crate) fn concat_or_alternate(
        &mut self,
        alternate: bool,
        mut subs: Vec<Id>,
        flags: Flags,
        can_factor: bool,
    ) -> Id {
        if alternate && can_factor && subs.len() > 1 {
            subs = crate::factor::factor_alternation(self, subs, flags);
        }
        match subs.len() {
            0 if alternate => self.add(Op::NoMatch, flags),
            0 => self.add(Op::EmptyMatch, flags),
            1 => subs[0],
            n if n > MAX_SUBS => {
                let groups: Vec<Vec<Id>> = subs.chunks(MAX_SUBS).map(<[Id]>::to_vec).collect();
                let big = groups
                    .into_iter()
                    .map(|g| self.concat_or_alternate(alternate, g, flags, false))
                    .collect();
                self.add(Self::composite(alternate, big), flags)
            }
            _ => self.add(Self::composite(alternate, subs), flags),
        }
    }

    fn composite(alternate: bool, subs: Vec<Id>) -> Op {
        if alternate {
            Op::Alternate(subs)
        } else {
            Op::Concat(subs)
        }
    }

    /// `Regexp::StarPlusOrQuest`: `x**` is `x*`, and any two of `*`, `+`, `?` stacked with
    /// the same flags are `x*`.
    pub(crate) fn rep(&mut self, rep: Rep, sub: Id, flags: Flags) -> Id {
        if let Op::Rep(inner, inner_sub) = *self.op(sub)
            && self.flags(sub) == flags
        {
            if inner == rep || inner == Rep::Star {
                return sub;
            }
            let star = self.add(Op::Rep(Rep::Star, inner_sub), flags);
            self.nodes[star].simple = true;
            return star;
        }
        self.add(Op::Rep(rep, sub), flags)
    }

    /// Whether the node is simple, given its children's judgement (`ComputeSimple`).
    pub(crate) fn compute_simple(&self, id: Id) -> bool {
        match self.op(id) {
            Op::Concat(subs) | Op::Alternate(subs) => subs.iter().all(|&s| self.nodes[s].simple),
            Op::CharClass { class, .. } => !class.is_empty() && !class.is_full(),
            Op::Capture { sub, .. } => self.nodes[*sub].simple,
            Op::Rep(_, sub) => {
                self.nodes[*sub].simple
                    && !matches!(self.op(*sub), Op::Rep(..) | Op::EmptyMatch | Op::NoMatch)
            }
            Op::Repeat { .. } | Op::LeftParen { .. } | Op::VerticalBar => false,
            _ => true,
        }
    }

    /// Whether two subtrees are the same regexp (`Regexp::Equal`).
    pub(crate) fn equal(&self, a: Id, b: Id) -> bool {
        let mut pairs = vec![(a, b)];
        while let Some((a, b)) = pairs.pop() {
            if !self.top_equal(a, b) {
                return false;
            }
            pairs.extend(
                self.subs(a)
                    .iter()
                    .copied()
                    .zip(self.subs(b).iter().copied()),
            );
        }
        true
    }

    /// `TopEqual`: the nodes themselves agree, children aside.
    fn top_equal(&self, a: Id, b: Id) -> bool {
        let (fa, fb) = (self.flags(a), self.flags(b));
        match (self.op(a), self.op(b)) {
            (Op::EndText, Op::EndText) => fa.same(fb, Flags::WAS_DOLLAR),
            (Op::Literal(x), Op::Literal(y)) => x == y && fa.same(fb, Flags::FOLD_CASE),
            (Op::LiteralString(x), Op::LiteralString(y)) => x == y && fa.same(fb, Flags::FOLD_CASE),
            (Op::Concat(x), Op::Concat(y)) | (Op::Alternate(x), Op::Alternate(y)) => {
                x.len() == y.len()
            }
            (Op::Rep(x, _), Op::Rep(y, _)) => x == y && fa.same(fb, Flags::NON_GREEDY),
            (
                Op::Repeat { min, max, .. },
                Op::Repeat {
                    min: min_b,
                    max: max_b,
                    ..
                },
            ) => fa.same(fb, Flags::NON_GREEDY) && min == min_b && max == max_b,
            (
                Op::Capture { cap, name, .. },
                Op::Capture {
                    cap: cap_b,
                    name: name_b,
                    ..
                },
            ) => cap == cap_b && name == name_b,
            (Op::CharClass { class: x, .. }, Op::CharClass { class: y, .. }) => x == y,
            (x, y) => {
                std::mem::discriminant(x) == std::mem::discriminant(y)
                    && x.subs().is_empty()
                    && !matches!(x, Op::LeftParen { .. })
            }
        }
    }
}
