//! The ok ops' call and return events as a time-ordered doubly linked list, the structure the
//! Wing–Gong search walks. Removed nodes keep their links, so undoing removals in reverse order
//! restores the list exactly ("dancing links"), which makes backtracking O(1).

use crate::history::Op;

/// The sentinel head node.
pub(crate) const HEAD: usize = 0;
/// "No node".
pub(crate) const NIL: usize = usize::MAX;
/// Marks return nodes in [`EventList::ret`].
const RETURN: usize = usize::MAX - 1;

/// The list over arrays; node 0 is the head, nodes 1.. the events in time order.
pub(crate) struct EventList {
    pub(crate) next: Vec<usize>,
    prev: Vec<usize>,
    /// The op of each node.
    pub(crate) op: Vec<usize>,
    /// For a call node, its return node; `RETURN` for a return node.
    ret: Vec<usize>,
    /// The time of each node's event.
    pub(crate) time: Vec<u64>,
}

impl EventList {
    /// The list of the ops that have a completion time (ok ops; info ops are scanned
    /// separately). At equal times calls sort before returns: an op completing at t and one
    /// invoked at t are concurrent.
    pub(crate) fn new(ops: &[&Op]) -> EventList {
        // (time, 0 = call / 1 = return, op)
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            if let Some(deadline) = op.deadline_ns() {
                events.push((op.invoke_ns, 0, i));
                events.push((deadline.max(op.invoke_ns), 1, i));
            }
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut list = EventList {
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![0; n],
            ret: vec![NIL; n],
            time: vec![0; n],
        };
        list.prev[HEAD] = NIL;
        let mut call_node = vec![NIL; ops.len()];
        for (pos, &(time, kind, op)) in events.iter().enumerate() {
            let node = pos + 1;
            list.op[node] = op;
            list.time[node] = time;
            if kind == 0 {
                call_node[op] = node;
            } else {
                list.ret[node] = RETURN;
                list.ret[call_node[op]] = node;
            }
        }
        list
    }

    /// Whether `node` is a call (not a return, not `NIL`).
    pub(crate) fn is_call(&self, node: usize) -> bool {
        node != NIL && self.ret[node] != RETURN
    }

    /// Removes a call node and its return node.
    pub(crate) fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret[call]);
    }

    /// Undoes the matching [`lift`](Self::lift); lifts must be undone in reverse order.
    pub(crate) fn unlift(&mut self, call: usize) {
        self.relink(self.ret[call]);
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}
