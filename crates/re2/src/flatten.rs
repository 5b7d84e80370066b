//! RE2's flattening (`Prog::Flatten`), counted rather than built: the program is cut into
//! trees, each grown from a root, and each tree becomes a list of its leaves, with a no-op
//! for every other root it reaches; alternations disappear. The lists' total length is the
//! program size. Which instructions are roots depends on their order, so this follows RE2's
//! order of discovery exactly.

use crate::prog::{Opcode, Prog};

/// Instruction ids in the order they were added, with their position (RE2's `SparseArray`).
struct OrderedMap {
    order: Vec<u32>,
    index: Vec<Option<usize>>,
}

impl OrderedMap {
    fn new(size: usize) -> OrderedMap {
        OrderedMap {
            order: Vec::new(),
            index: vec![None; size],
        }
    }

    fn contains(&self, id: u32) -> bool {
        self.index[id as usize].is_some()
    }

    fn insert(&mut self, id: u32) {
        if !self.contains(id) {
            self.index[id as usize] = Some(self.order.len());
            self.order.push(id);
        }
    }

    fn clear(&mut self) {
        for &id in &self.order {
            self.index[id as usize] = None;
        }
        self.order.clear();
    }
}

struct Flattener<'p> {
    prog: &'p Prog,
    roots: OrderedMap,
    /// For each instruction an alternation leads to, the alternations that do.
    preds: Vec<Vec<u32>>,
    reachable: OrderedMap,
}

/// The size of the program once flattened.
pub(crate) fn flattened_size(prog: &Prog) -> usize {
    let size = prog.inst.len();
    let mut f = Flattener {
        prog,
        roots: OrderedMap::new(size),
        preds: vec![Vec::new(); size],
        reachable: OrderedMap::new(size),
    };
    f.mark_successors();
    let mut sorted = f.roots.order.clone();
    sorted.sort_unstable();
    for &root in sorted.iter().skip(1).rev() {
        if root != prog.start_unanchored && root != prog.start {
            f.mark_dominator(root);
        }
    }
    let mut total = 0;
    let mut i = 0;
    while let Some(&root) = f.roots.order.get(i) {
        total += f.list_len(root);
        i += 1;
    }
    total
}

impl Flattener<'_> {
    /// Follows the program from the unanchored start: every instruction after a leaf is a
    /// "successor root"; every alternation is recorded as its exits' predecessor.
    fn mark_successors(&mut self) {
        let prog = self.prog;
        self.roots.insert(0);
        self.roots.insert(prog.start_unanchored);
        self.roots.insert(prog.start);
        self.reachable.clear();
        let mut stack = vec![prog.start_unanchored];
        while let Some(mut id) = stack.pop() {
            while !self.reachable.contains(id) {
                self.reachable.insert(id);
                let inst = prog.inst[id as usize];
                match inst.op {
                    Opcode::Alt | Opcode::AltMatch => {
                        self.preds[inst.out as usize].push(id);
                        self.preds[inst.out1 as usize].push(id);
                        stack.push(inst.out1);
                        id = inst.out;
                    }
                    Opcode::ByteRange | Opcode::Capture | Opcode::EmptyWidth => {
                        self.roots.insert(inst.out);
                        id = inst.out;
                    }
                    Opcode::Nop => id = inst.out,
                    Opcode::Match | Opcode::Fail => break,
                }
            }
        }
    }

    /// What `root` reaches without passing a leaf or another root.
    fn flood(&mut self, root: u32) {
        let prog = self.prog;
        self.reachable.clear();
        let mut stack = vec![root];
        while let Some(mut id) = stack.pop() {
            while !self.reachable.contains(id) {
                self.reachable.insert(id);
                if id != root && self.roots.contains(id) {
                    break;
                }
                let inst = prog.inst[id as usize];
                match inst.op {
                    Opcode::Alt | Opcode::AltMatch => {
                        stack.push(inst.out1);
                        id = inst.out;
                    }
                    Opcode::Nop => id = inst.out,
                    _ => break,
                }
            }
        }
    }

    /// A "dominator root": an instruction `root` reaches that has a predecessor `root` does
    /// not reach must be a root too.
    fn mark_dominator(&mut self, root: u32) {
        self.flood(root);
        for i in 0..self.reachable.order.len() {
            let id = self.reachable.order[i];
            let reached_from_outside = self.preds[id as usize]
                .iter()
                .any(|&pred| !self.reachable.contains(pred));
            if reached_from_outside {
                self.roots.insert(id);
            }
        }
    }

    /// The length of the list `root` becomes: its leaves (an `AltMatch` kept too) and a
    /// no-op for each other root it reaches.
    fn list_len(&mut self, root: u32) -> usize {
        let prog = self.prog;
        self.reachable.clear();
        let mut len = 0;
        let mut stack = vec![root];
        while let Some(mut id) = stack.pop() {
            while !self.reachable.contains(id) {
                self.reachable.insert(id);
                if id != root && self.roots.contains(id) {
                    len += 1;
                    break;
                }
                let inst = prog.inst[id as usize];
                match inst.op {
                    Opcode::Alt | Opcode::AltMatch => {
                        len += usize::from(inst.op == Opcode::AltMatch);
                        stack.push(inst.out1);
                        id = inst.out;
                    }
                    Opcode::Nop => id = inst.out,
                    _ => {
                        len += 1;
                        break;
                    }
                }
            }
        }
        len
    }
}
