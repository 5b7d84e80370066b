//! RE2's compiler (`compile.cc`) for Latin-1: the simplified tree becomes a program of
//! instructions, with the instructions, their order and their links exactly as RE2 makes
//! them, since the program's final size depends on all three. Fragments keep their dangling
//! exits as RE2 does, threaded through the instructions' own links (`PatchList`).

use crate::{
    class::CharClass,
    prog::{Inst, Opcode, Prog},
    regexp::{Flags, Id, Op, Rep, Tree},
    simplify::simplify,
    walk::{Pre, Visitor, walk},
};

/// A list of dangling exits: `p >> 1` is an instruction, `p & 1` its second exit.
#[derive(Clone, Copy, Debug, Default)]
struct PatchList {
    head: u32,
    tail: u32,
}

impl PatchList {
    fn one(p: u32) -> PatchList {
        PatchList { head: p, tail: p }
    }
}

/// A compiled piece: its entry (0: it never matches), its exits, and whether it may match
/// the empty string.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Frag {
    begin: u32,
    end: PatchList,
    nullable: bool,
}

struct Compiler {
    inst: Vec<Inst>,
    max_inst: usize,
    failed: bool,
    rune_range: Frag,
}

/// Compiles the tree under `root` as RE2 compiles a regexp for a forward search, within
/// `max_inst` instructions (RE2's memory budget); `None` when RE2 would give up.
pub(crate) fn compile(tree: &mut Tree, root: Id, max_inst: usize) -> Option<Prog> {
    let simplified = simplify(tree, root);
    let (re, anchored) = match anchor_start(tree, simplified, 0) {
        Some(re) => (re, true),
        None => (simplified, false),
    };
    let re = anchor_end(tree, re, 0).unwrap_or(re);
    let mut c = Compiler {
        inst: vec![Inst::new(Opcode::Fail)],
        max_inst,
        failed: false,
        rune_range: Frag::default(),
    };
    let all = walk(
        tree,
        re,
        Frag::default(),
        &mut c,
        max_inst.saturating_mul(2),
    );
    if c.failed {
        return None;
    }
    let matched = c.matched();
    let all = c.cat(all, matched);
    let start = all.begin;
    let start_unanchored = if anchored {
        start
    } else {
        let dot_star = c.dot_star();
        c.cat(dot_star, all).begin
    };
    if c.failed {
        return None;
    }
    if start == 0 && start_unanchored == 0 {
        c.inst.truncate(1);
    }
    Some(Prog {
        inst: c.inst,
        start,
        start_unanchored,
    })
}

/// `IsAnchorStart`: the regexp without the `\A` it must begin with, looking at most four
/// levels down through concatenations and captures.
fn anchor_start(tree: &mut Tree, id: Id, depth: usize) -> Option<Id> {
    anchor(tree, id, depth, |op| matches!(op, Op::BeginText), |_| 0)
}

/// `IsAnchorEnd`: the same for the `\z` (or `$`) it must end with.
fn anchor_end(tree: &mut Tree, id: Id, depth: usize) -> Option<Id> {
    anchor(tree, id, depth, |op| matches!(op, Op::EndText), |n| n - 1)
}

/// The regexp with its anchor, found at child `at(n)` of concatenations of `n`, replaced by
/// an empty match.
fn anchor(
    tree: &mut Tree,
    id: Id,
    depth: usize,
    is_anchor: fn(&Op) -> bool,
    at: fn(usize) -> usize,
) -> Option<Id> {
    if depth >= 4 {
        return None;
    }
    let flags = tree.flags(id);
    match tree.op(id).clone() {
        Op::Concat(mut subs) if !subs.is_empty() => {
            let i = at(subs.len());
            subs[i] = anchor(tree, subs[i], depth + 1, is_anchor, at)?;
            Some(tree.concat(subs, flags))
        }
        Op::Capture { sub, cap, .. } => {
            let sub = anchor(tree, sub, depth + 1, is_anchor, at)?;
            Some(tree.add(
                Op::Capture {
                    sub,
                    cap,
                    name: None,
                },
                flags,
            ))
        }
        op if is_anchor(&op) => Some(tree.add(Op::EmptyMatch, flags)),
        _ => None,
    }
}

impl Compiler {
    fn alloc(&mut self, n: usize) -> Option<u32> {
        if self.failed || self.inst.len() + n > self.max_inst {
            self.failed = true;
            return None;
        }
        let id = self.inst.len() as u32;
        self.inst.extend((0..n).map(|_| Inst::new(Opcode::Nop)));
        Some(id)
    }

    /// The exit `p` names.
    fn exit(&mut self, p: u32) -> &mut u32 {
        let inst = &mut self.inst[(p >> 1) as usize];
        if p & 1 == 1 {
            &mut inst.out1
        } else {
            &mut inst.out
        }
    }

    /// Points every exit of `l` at `to`.
    fn patch(&mut self, l: PatchList, to: u32) {
        let mut p = l.head;
        while p != 0 {
            let slot = self.exit(p);
            p = *slot;
            *slot = to;
        }
    }

    fn append(&mut self, l1: PatchList, l2: PatchList) -> PatchList {
        if l1.head == 0 {
            return l2;
        }
        if l2.head == 0 {
            return l1;
        }
        *self.exit(l1.tail) = l2.head;
        PatchList {
            head: l1.head,
            tail: l2.tail,
        }
    }

    fn one(&mut self, op: Opcode, nullable: bool) -> Frag {
        match self.alloc(1) {
            Some(id) => {
                self.inst[id as usize] = Inst::new(op);
                Frag {
                    begin: id,
                    end: PatchList::one(id << 1),
                    nullable,
                }
            }
            None => Frag::default(),
        }
    }

    fn byte_range(&mut self, lo: u32, hi: u32) -> Frag {
        let f = self.one(Opcode::ByteRange, false);
        if f.begin != 0 {
            let inst = &mut self.inst[f.begin as usize];
            (inst.lo, inst.hi) = (lo, hi);
        }
        f
    }

    fn nop(&mut self) -> Frag {
        self.one(Opcode::Nop, true)
    }

    fn matched(&mut self) -> Frag {
        let f = self.one(Opcode::Match, false);
        Frag {
            end: PatchList::default(),
            ..f
        }
    }

    fn cat(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 || b.begin == 0 {
            return Frag::default();
        }
        let first = self.inst[a.begin as usize];
        if first.op == Opcode::Nop && a.end.head == a.begin << 1 && first.out == 0 {
            self.patch(a.end, b.begin);
            return b;
        }
        self.patch(a.end, b.begin);
        Frag {
            begin: a.begin,
            end: b.end,
            nullable: a.nullable && b.nullable,
        }
    }

    fn alt(&mut self, a: Frag, b: Frag) -> Frag {
        if a.begin == 0 {
            return b;
        }
        if b.begin == 0 {
            return a;
        }
        let Some(id) = self.alloc(1) else {
            return Frag::default();
        };
        self.inst[id as usize] = Inst::alt(a.begin, b.begin);
        let end = self.append(a.end, b.end);
        Frag {
            begin: id,
            end,
            nullable: a.nullable || b.nullable,
        }
    }

    /// An Alt whose one exit goes to `to` (first, unless non-greedy) and whose other dangles.
    fn loop_alt(&mut self, to: u32, nongreedy: bool) -> Option<(u32, PatchList)> {
        let id = self.alloc(1)?;
        let (inst, exit) = if nongreedy {
            (Inst::alt(0, to), id << 1)
        } else {
            (Inst::alt(to, 0), (id << 1) | 1)
        };
        self.inst[id as usize] = inst;
        Some((id, PatchList::one(exit)))
    }

    fn plus(&mut self, a: Frag, nongreedy: bool) -> Frag {
        let Some((id, exit)) = self.loop_alt(a.begin, nongreedy) else {
            return Frag::default();
        };
        self.patch(a.end, id);
        Frag {
            begin: a.begin,
            end: exit,
            nullable: a.nullable,
        }
    }

    /// `a*`: an empty-matching `a` loops the other way round, as `(a+)?`.
    fn star(&mut self, a: Frag, nongreedy: bool) -> Frag {
        if a.nullable {
            let plus = self.plus(a, nongreedy);
            return self.quest(plus, nongreedy);
        }
        let Some((id, exit)) = self.loop_alt(a.begin, nongreedy) else {
            return Frag::default();
        };
        self.patch(a.end, id);
        Frag {
            begin: id,
            end: exit,
            nullable: true,
        }
    }

    fn quest(&mut self, a: Frag, nongreedy: bool) -> Frag {
        if a.begin == 0 {
            return self.nop();
        }
        let Some((id, exit)) = self.loop_alt(a.begin, nongreedy) else {
            return Frag::default();
        };
        let end = self.append(exit, a.end);
        Frag {
            begin: id,
            end,
            nullable: true,
        }
    }

    fn capture(&mut self, a: Frag) -> Frag {
        if a.begin == 0 {
            return Frag::default();
        }
        let Some(id) = self.alloc(2) else {
            return Frag::default();
        };
        self.inst[id as usize] = Inst::new(Opcode::Capture);
        self.inst[id as usize].out = a.begin;
        self.inst[id as usize + 1] = Inst::new(Opcode::Capture);
        self.patch(a.end, id + 1);
        Frag {
            begin: id,
            end: PatchList::one((id + 1) << 1),
            nullable: a.nullable,
        }
    }

    /// A class: the alternation of its ranges, cut to Latin-1 (`AddRuneRangeLatin1`). A
    /// class that treats A-Z as a-z keeps only its lower case, matched case-insensitively.
    fn class(&mut self, class: &CharClass) -> Frag {
        let fold_ascii = class.folds_ascii();
        self.rune_range = Frag::default();
        for &(lo, hi) in class.ranges() {
            let upper_only = u32::from(b'A') <= lo && hi <= u32::from(b'Z');
            if (fold_ascii && upper_only) || lo > hi || lo > 0xFF {
                continue;
            }
            let f = self.byte_range(lo, hi.min(0xFF));
            self.rune_range.end = self.append(self.rune_range.end, f.end);
            self.add_suffix(f.begin);
        }
        self.rune_range
    }

    /// `AddSuffix` in Latin-1: one more alternative of the class.
    fn add_suffix(&mut self, id: u32) {
        if self.failed {
            return;
        }
        if self.rune_range.begin == 0 {
            self.rune_range.begin = id;
            return;
        }
        match self.alloc(1) {
            Some(alt) => {
                self.inst[alt as usize] = Inst::alt(self.rune_range.begin, id);
                self.rune_range.begin = alt;
            }
            None => self.rune_range.begin = 0,
        }
    }

    /// `.*?` over any byte, before an unanchored program.
    fn dot_star(&mut self) -> Frag {
        let any = self.byte_range(0, 0xFF);
        self.star(any, true)
    }

    fn node(&mut self, tree: &Tree, id: Id, children: &[Frag]) -> Frag {
        let nongreedy = tree.flags(id).has(Flags::NON_GREEDY);
        match tree.op(id) {
            Op::NoMatch => Frag::default(),
            Op::EmptyMatch => self.nop(),
            Op::Concat(_) => children[1..]
                .iter()
                .fold(children[0], |f, &c| self.cat(f, c)),
            Op::Alternate(_) => children[1..]
                .iter()
                .fold(children[0], |f, &c| self.alt(f, c)),
            Op::Rep(Rep::Star, _) => self.star(children[0], nongreedy),
            Op::Rep(Rep::Plus, _) => self.plus(children[0], nongreedy),
            Op::Rep(Rep::Quest, _) => self.quest(children[0], nongreedy),
            Op::Literal(r) => self.byte_range(*r, *r),
            Op::LiteralString(runes) if runes.is_empty() => self.nop(),
            Op::LiteralString(runes) => {
                let mut f = self.byte_range(runes[0], runes[0]);
                for &r in &runes[1..] {
                    let next = self.byte_range(r, r);
                    f = self.cat(f, next);
                }
                f
            }
            Op::AnyChar => self.class(&CharClass::range(0, crate::class::RUNE_MAX)),
            Op::AnyByte => self.byte_range(0, 0xFF),
            Op::CharClass { class, .. } => self.class(class),
            Op::Capture { .. } => self.capture(children[0]),
            op if op.is_empty_width() => self.one(Opcode::EmptyWidth, true),
            _ => {
                // Counted repetitions are gone after simplifying, markers after parsing.
                self.failed = true;
                Frag::default()
            }
        }
    }
}

impl Visitor for Compiler {
    type Arg = Frag;

    fn pre(&mut self, _: &Tree, _: Id, _: &Frag) -> Pre<Frag> {
        if self.failed {
            Pre::Stop(Frag::default())
        } else {
            Pre::Descend(Frag::default())
        }
    }

    fn post(&mut self, tree: &mut Tree, id: Id, _: Frag, children: Vec<Frag>) -> Frag {
        if self.failed {
            return Frag::default();
        }
        self.node(tree, id, &children)
    }

    fn short(&mut self) -> Frag {
        self.failed = true;
        Frag::default()
    }
}
