//! A compiled program and what RE2 does to it before counting it (`prog.cc`): the peephole
//! pass (`Optimize`: no-ops skipped, `.*` before a match marked) and flattening (`Flatten`),
//! whose instruction count is the program size Envoy checks.

/// What an instruction does (`InstOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opcode {
    Alt,
    AltMatch,
    ByteRange,
    Capture,
    EmptyWidth,
    Match,
    Nop,
    Fail,
}

/// One instruction: its opcode, its exits (`out1` for alternations only) and, for a byte
/// range, its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inst {
    pub(crate) op: Opcode,
    pub(crate) out: u32,
    pub(crate) out1: u32,
    pub(crate) lo: u32,
    pub(crate) hi: u32,
}

impl Inst {
    pub(crate) fn new(op: Opcode) -> Inst {
        Inst {
            op,
            out: 0,
            out1: 0,
            lo: 0,
            hi: 0,
        }
    }

    pub(crate) fn alt(out: u32, out1: u32) -> Inst {
        Inst {
            out,
            out1,
            ..Inst::new(Opcode::Alt)
        }
    }

    fn is_any_byte_back_to(&self, id: u32) -> bool {
        self.op == Opcode::ByteRange && self.out == id && self.lo == 0 && self.hi == 0xFF
    }
}

/// A program: instruction 0 fails, `start` is the anchored entry, `start_unanchored` the
/// one behind the `.*?` loop (the same when the regexp is anchored at its start).
pub(crate) struct Prog {
    pub(crate) inst: Vec<Inst>,
    pub(crate) start: u32,
    pub(crate) start_unanchored: u32,
}

/// A set that remembers the order of insertion (RE2's `SparseSet`), as a work queue.
struct Queue {
    order: Vec<u32>,
    seen: Vec<bool>,
}

impl Queue {
    fn new(size: usize) -> Queue {
        Queue {
            order: Vec::new(),
            seen: vec![false; size],
        }
    }

    /// Adds `id` unless it is 0 (fail) or already in.
    fn add(&mut self, id: u32) {
        if id != 0 && !self.seen[id as usize] {
            self.seen[id as usize] = true;
            self.order.push(id);
        }
    }
}

impl Prog {
    /// RE2's peephole pass: exits skip no-ops, and a loop over any byte beside a match
    /// becomes an `AltMatch`. Both walk from the anchored start only, as RE2's do.
    pub(crate) fn optimize(&mut self) {
        let mut q = Queue::new(self.inst.len());
        q.add(self.start);
        let mut i = 0;
        while let Some(&id) = q.order.get(i) {
            i += 1;
            let out = self.skip_nops(self.inst[id as usize].out);
            self.inst[id as usize].out = out;
            q.add(out);
            if self.inst[id as usize].op == Opcode::Alt {
                let out1 = self.skip_nops(self.inst[id as usize].out1);
                self.inst[id as usize].out1 = out1;
                q.add(out1);
            }
        }
        let mut q = Queue::new(self.inst.len());
        q.add(self.start);
        let mut i = 0;
        while let Some(&id) = q.order.get(i) {
            i += 1;
            let inst = self.inst[id as usize];
            q.add(inst.out);
            if inst.op != Opcode::Alt {
                continue;
            }
            q.add(inst.out1);
            let (j, k) = (self.inst[inst.out as usize], self.inst[inst.out1 as usize]);
            if (j.is_any_byte_back_to(id) && self.is_match(inst.out1))
                || (self.is_match(inst.out) && k.is_any_byte_back_to(id))
            {
                self.inst[id as usize].op = Opcode::AltMatch;
            }
        }
    }

    fn skip_nops(&self, mut id: u32) -> u32 {
        while id != 0 && self.inst[id as usize].op == Opcode::Nop {
            id = self.inst[id as usize].out;
        }
        id
    }

    /// Whether `id` matches at once, perhaps after captures and no-ops.
    fn is_match(&self, mut id: u32) -> bool {
        loop {
            let inst = self.inst[id as usize];
            match inst.op {
                Opcode::Capture | Opcode::Nop => id = inst.out,
                Opcode::Match => return true,
                _ => return false,
            }
        }
    }
}
