//! Is one key's history linearizable? The Wing–Gong backtracking search with the memoisation of
//! Lowe ("Testing for linearizability", 2017) as used by Porcupine, plus pruning specific to this
//! register-with-append model.
//!
//! Every ok op becomes a *call* event at its invoke time and a *return* event at its completion,
//! in a doubly linked list sorted by time (the `events` module). At equal times calls sort before
//! returns, so an op completing at t and one invoked at t count as concurrent: the checker only
//! orders A before B when A completed strictly before B was invoked, and never rejects a history
//! for a clock tie. Info ops have no return (they may take effect at any time after their invoke,
//! or never) and are kept in a separate list by invoke time.
//!
//! The search walks the list from the head. Any call met before the first return belongs to an op
//! that may take effect now: it has been invoked, and every op that must precede it has taken
//! effect. If the model accepts the op, the op is *lifted* out of the list and the walk restarts;
//! when no candidate is left, the op of the first return has run out of time, so the last choice
//! is undone (*unlifted*) and its alternatives resume. The history is linearizable once every ok op
//! is lifted: info ops left over simply never happened. The docs of `Search::run` give the order in
//! which candidates are tried and why matching reads never need alternatives.
//!
//! Without memoisation this is exponential in the concurrency. Two search paths that have lifted
//! the same set of ops and reached the same model state have the same future, so each (set, state)
//! pair is explored once, and so is one that differs only by having more info ops applied
//! (the `memo` module). Two more prunings keep typical histories of thousands of ops per key in the
//! tens of milliseconds:
//!
//! * writes whose value no read shows: unobserved info writes are dropped, and unobserved ok writes
//!   all lead to one state (the `observed` module);
//! * a state that can no longer lead to what the next pending read returned is abandoned at once
//!   (the `pending` module).
//!
//! Pathological histories (many concurrent info writes whose values are read, say) can still blow
//! up, so the search takes a [`Budget`] and answers [`Outcome::Unknown`] when it runs out: never a
//! false pass.

use serde::{Deserialize, Serialize};

use crate::bitset::Bitset;
use crate::budget::{Budget, Exceeded, Meter};
use crate::events::{EventList, HEAD, NIL};
use crate::hash::zobrist;
use crate::history::{Op, OpKind, Status};
use crate::memo::Memo;
use crate::model::{Model, StateId, ABSENT};
use crate::observed::drop_unobserved_info;
use crate::pending::Pending;

/// The verdict on one key's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Linearizable,
    NotLinearizable,
    /// The budget ran out before the search could decide.
    Unknown(Exceeded),
}

/// Checks one key's ops (all ops are taken to be on the same key; fail ops and info gets are
/// dropped first). Use [`crate::check()`] for a whole history.
pub fn check_ops(ops: &[Op], budget: &Budget) -> Outcome {
    let relevant: Vec<&Op> = ops.iter().filter(|op| op.is_relevant()).collect();
    linearize(&relevant, budget)
}

/// The search itself. `ops` must already be filtered with [`Op::is_relevant`].
pub(crate) fn linearize(ops: &[&Op], budget: &Budget) -> Outcome {
    linearize_counted(ops, budget).0
}

/// [`linearize`], also returning the number of steps taken.
pub(crate) fn linearize_counted(ops: &[&Op], budget: &Budget) -> (Outcome, u64) {
    // With no read nothing constrains the writes: any order is a linearization.
    if !ops.iter().any(|op| op.kind == OpKind::Get) {
        return (Outcome::Linearizable, 0);
    }
    let (kept, unobserved) = drop_unobserved_info(ops);
    let mut meter = Meter::new(budget);
    let outcome = Search::new(&kept, &unobserved).run(&mut meter);
    (outcome, meter.steps)
}

/// A choice the search made: an op taken to have its effect at this point.
#[derive(Clone, Copy)]
enum Choice {
    /// An ok get whose result matched the state, by its call node. Taking such a read at once
    /// is always safe (see [`Search::run`]), so it is never an alternative to anything.
    Read(usize),
    /// An ok put, append or delete, by its call node.
    Call(usize),
    /// An info op, by its position in the info list, with the scan limit when it was chosen.
    Info(usize, u64),
}

/// Where the search is looking for the next op to take effect.
#[derive(Clone, Copy)]
enum Scan {
    /// Enabled gets that match the state, from this list node on.
    Reads(usize),
    /// Enabled ok writes, from this list node on.
    Calls(usize),
    /// Info ops invoked at or before `limit`, from this position of the info list on.
    Infos { next: usize, limit: u64 },
}

/// What happened when the search tried to let an op take effect.
enum Step {
    /// The model refuses (a get whose result differs from the state).
    Refused,
    /// The resulting configuration is known to be hopeless: already explored, or the next read
    /// cannot be reached (the `pending` module).
    Hopeless,
    /// The op took effect (not yet recorded on the stack).
    Next(StateId),
}

/// The state of one search.
struct Search<'a> {
    ops: &'a [&'a Op],
    model: Model<'a>,
    list: EventList,
    /// Info ops by invoke time, and whether each has been linearized.
    infos: Vec<usize>,
    info_lifted: Vec<bool>,
    /// For each info op, the previous one (by invoke time) with the same effect.
    same_before: Vec<Option<usize>>,
    pending: Pending<'a>,
    memo: Memo,
    /// The ops linearized so far.
    lifted: Bitset,
    /// The Zobrist hash of the ok ops among them.
    ok_hash: u64,
    state: StateId,
    /// Ok ops not yet linearized.
    remaining: usize,
    /// The choices made so far, with the state before each.
    stack: Vec<(Choice, StateId)>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [&'a Op], unobserved: &[bool]) -> Search<'a> {
        let mut infos: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].status == Status::Info)
            .collect();
        infos.sort_by_key(|&i| ops[i].invoke_ns);
        let memo = Memo::new(ops.len(), infos.iter().copied());
        let model = Model::new(ops, unobserved);
        let same_before = (0..infos.len())
            .map(|k| {
                (0..k)
                    .rev()
                    .find(|&j| model.same_effect(infos[j], infos[k]))
            })
            .collect();
        Search {
            ops,
            model,
            same_before,
            list: EventList::new(ops),
            info_lifted: vec![false; infos.len()],
            remaining: ops.len() - infos.len(),
            infos,
            pending: Pending::new(ops),
            memo,
            lifted: Bitset::new(ops.len()),
            ok_hash: 0,
            state: ABSENT,
            stack: Vec::new(),
        }
    }

    /// The Wing–Gong loop. From each configuration it tries, in order:
    ///
    /// 1. An enabled ok get that matches the state. Taking it now is safe: a get does not change
    ///    the state and every op that must precede it already has, so any linearization that
    ///    places it later can place it here instead. Hence if this choice fails, the whole
    ///    configuration fails, and no alternative is tried.
    /// 2. Each enabled ok write, in list order.
    /// 3. Each info op invoked by the first pending return, in invoke order. Trying these last
    ///    places them only where a read needs them, instead of as early as possible and then
    ///    carried along until a read far later refutes the whole stretch. Of info ops with the
    ///    same effect only the earliest unused one is tried: both can act from now on, so
    ///    choosing the other leads to the same futures (this matters for the many identical
    ///    info deletes of a partition).
    ///
    /// When nothing is left to try, the last choice is undone and its alternatives resume.
    fn run(&mut self, meter: &mut Meter) -> Outcome {
        let mut scan = Scan::Reads(self.list.next[HEAD]);
        loop {
            if self.remaining == 0 {
                return Outcome::Linearizable;
            }
            if let Some(exceeded) = meter.tick(&self.memo) {
                return Outcome::Unknown(exceeded);
            }
            let (choice, step) = match scan {
                Scan::Reads(entry) if self.list.is_call(entry) => {
                    scan = Scan::Reads(self.list.next[entry]);
                    let op = self.list.op[entry];
                    if self.ops[op].kind != OpKind::Get {
                        continue;
                    }
                    match self.step(op) {
                        Step::Refused => continue,
                        Step::Hopeless => (Choice::Read(entry), Step::Hopeless),
                        next => (Choice::Read(entry), next),
                    }
                }
                Scan::Reads(_) => {
                    scan = Scan::Calls(self.list.next[HEAD]);
                    continue;
                }
                Scan::Calls(entry) if self.list.is_call(entry) => {
                    scan = Scan::Calls(self.list.next[entry]);
                    let op = self.list.op[entry];
                    if self.ops[op].kind == OpKind::Get {
                        // Gets were tried in the read phase.
                        continue;
                    }
                    (Choice::Call(entry), self.step(op))
                }
                Scan::Calls(entry) => {
                    // At the first pending return: every ok candidate has been tried.
                    let limit = if entry == NIL {
                        u64::MAX
                    } else {
                        self.list.time[entry]
                    };
                    scan = Scan::Infos { next: 0, limit };
                    continue;
                }
                Scan::Infos { next, limit } => {
                    // Of info ops with the same effect, only the first unlifted one is tried:
                    // both may act from now on, so either choice leads to the same futures.
                    let candidate = (next..self.infos.len())
                        .take_while(|&k| self.ops[self.infos[k]].invoke_ns <= limit)
                        .find(|&k| {
                            !self.info_lifted[k]
                                && self.same_before[k].is_none_or(|j| self.info_lifted[j])
                        });
                    let Some(k) = candidate else {
                        match self.backtrack() {
                            Some(resume) => scan = resume,
                            None => return Outcome::NotLinearizable,
                        }
                        continue;
                    };
                    scan = Scan::Infos { next: k + 1, limit };
                    (Choice::Info(k, limit), self.step(self.infos[k]))
                }
            };
            match (choice, step) {
                (_, Step::Next(next)) => {
                    self.apply(choice, next);
                    scan = Scan::Reads(self.list.next[HEAD]);
                }
                (Choice::Read(_), _) => match self.backtrack() {
                    // A matching read leads nowhere: neither does this configuration.
                    Some(resume) => scan = resume,
                    None => return Outcome::NotLinearizable,
                },
                _ => {}
            }
        }
    }

    fn op_of(&self, choice: Choice) -> usize {
        match choice {
            Choice::Read(node) | Choice::Call(node) => self.list.op[node],
            Choice::Info(k, _) => self.infos[k],
        }
    }

    /// The op's contribution to `ok_hash`: its Zobrist key if it is an ok op.
    fn zobrist(&self, op: usize) -> u64 {
        if self.ops[op].status == Status::Ok {
            zobrist(op)
        } else {
            0
        }
    }

    /// Tries to let `op` take effect in the current configuration.
    fn step(&mut self, op: usize) -> Step {
        let Some(next) = self.model.step(self.state, op) else {
            return Step::Refused;
        };
        if !self.pending.viable(&mut self.model, next, op) {
            return Step::Hopeless;
        }
        self.lifted.insert(op);
        let new = self
            .memo
            .insert(&self.lifted, self.ok_hash ^ self.zobrist(op), next);
        self.lifted.remove(op);
        if new {
            Step::Next(next)
        } else {
            Step::Hopeless
        }
    }

    /// Records a successful step.
    fn apply(&mut self, choice: Choice, next: StateId) {
        let op = self.op_of(choice);
        self.stack.push((choice, self.state));
        self.state = next;
        self.lifted.insert(op);
        self.ok_hash ^= self.zobrist(op);
        self.pending.remove(op);
        match choice {
            Choice::Read(node) | Choice::Call(node) => {
                self.list.lift(node);
                self.remaining -= 1;
            }
            Choice::Info(k, _) => self.info_lifted[k] = true,
        }
    }

    /// Undoes choices until one has alternatives left; where to resume, or `None` if the stack
    /// ran out (the history is not linearizable).
    fn backtrack(&mut self) -> Option<Scan> {
        loop {
            let (choice, before) = self.stack.pop()?;
            let op = self.op_of(choice);
            self.state = before;
            self.lifted.remove(op);
            self.ok_hash ^= self.zobrist(op);
            self.pending.insert(op);
            match choice {
                Choice::Read(node) => {
                    self.list.unlift(node);
                    self.remaining += 1;
                }
                Choice::Call(node) => {
                    self.list.unlift(node);
                    self.remaining += 1;
                    return Some(Scan::Calls(self.list.next[node]));
                }
                Choice::Info(k, limit) => {
                    self.info_lifted[k] = false;
                    return Some(Scan::Infos { next: k + 1, limit });
                }
            }
        }
    }
}
