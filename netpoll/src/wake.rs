//! The cross-thread wake-up hand-shake between a core and the threads that send it tasks.
//!
//! A sender queues its task, then [`notify`](WakeFlag::notify)s: it signals the core's
//! eventfd only if the core said it is going to sleep. The core, before sleeping, calls
//! [`prepare_sleep`](WakeFlag::prepare_sleep), which raises the flag and then looks at the
//! queue once more. This is Dekker's pattern: each side writes its variable, then a
//! sequentially consistent fence, then reads the other's, so at least one of them sees
//! the other: either the core finds the task before it sleeps, or the sender sees the flag
//! and signals. The fences make that hold whatever orderings the queue uses inside (a
//! release store by the sender's push would not be enough with SeqCst operations on the
//! flag alone, by the letter of the memory model). This module's loom test checks it over
//! this code: `RUSTFLAGS="--cfg loom" cargo test -p netpoll --lib --release wake`.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// Whether a core is (about to be) asleep and needs a signal to see new tasks.
#[derive(Debug, Default)]
pub(crate) struct WakeFlag {
    sleeping: AtomicBool,
}

impl WakeFlag {
    /// Sender side, after queueing a task: whether the core must be signalled.
    pub(crate) fn notify(&self) -> bool {
        // Orders the queue write before the flag read; pairs with `prepare_sleep`'s fence.
        fence(Ordering::SeqCst);
        self.sleeping.swap(false, Ordering::Relaxed)
    }

    /// Core side, before sleeping: raises the flag, then asks `has_work` (the queue) once
    /// more. Returns whether the core may sleep; if not, the flag may stay raised, which
    /// costs at most one spurious signal.
    pub(crate) fn prepare_sleep(&self, has_work: impl Fn() -> bool) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        // Orders the flag write before the queue read; pairs with `notify`'s fence.
        fence(Ordering::SeqCst);
        !has_work()
    }

    /// Core side, after waking.
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;

    /// No lost wake-up: whenever the core decides to sleep, every task queued before or
    /// while it decided is either seen by the core or followed by a signal.
    #[test]
    fn a_task_is_never_left_unseen_by_a_sleeping_core() {
        loom::model(|| {
            let flag = Arc::new(WakeFlag::default());
            // The task queue, modelled by a counter written and read with the weakest
            // orderings a queue could use (release push, acquire check).
            let queued = Arc::new(AtomicUsize::new(0));
            let signalled = Arc::new(AtomicBool::new(false));
            let sender = {
                let (flag, queued, signalled) = (flag.clone(), queued.clone(), signalled.clone());
                loom::thread::spawn(move || {
                    queued.fetch_add(1, Ordering::Release);
                    if flag.notify() {
                        signalled.store(true, Ordering::SeqCst);
                    }
                })
            };
            let sleeps = flag.prepare_sleep(|| queued.load(Ordering::Acquire) > 0);
            sender.join().unwrap();
            if sleeps {
                assert!(
                    signalled.load(Ordering::SeqCst),
                    "the core slept on a queued task and nobody signalled it"
                );
            }
            flag.awake();
        });
    }
}
