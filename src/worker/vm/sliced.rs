//! A Luau call as a future that runs in slices and hands its thread back
//! through tokio's driver between them.
//!
//! The watchdog ends a running call's slice every
//! [`SLICE`](crate::worker::watchdog::SLICE): the interrupt yields, and mlua
//! wakes the call's task at once (`wake_by_ref`) and returns `Pending`. A
//! task woken that way goes straight back on the run queue, and tokio polls
//! its I/O driver only every 61 task polls while tasks are runnable: a
//! spinning tenant's slices then delayed a neighbour's next frame from the
//! master by up to 61 slices (300 ms). So the call gets a waker of its own
//! ([`SelfWake`]) that notices a wake during the poll, and the slice ends
//! with [`tokio::task::yield_now`], whose wake tokio defers until after it
//! has polled the driver. Wakes from outside the poll (a KV answer, a
//! timer) go to the task's waker as they are.
//!
//! A slice can end in mlua's own poll loop, between an awaited host call's
//! poll and the loop's pending yield (`poll(...)`, then the loop's back
//! edge, a safepoint). The next resume then only reaches that pending
//! yield, without polling the host call: if the call's wake came while
//! the slice ended, it is spent, and nothing would poll the call again
//! before the deadline. So the poll after a slice's end that comes back
//! `Pending` asks for one more ([`sliced`]'s catch-up), in which the loop
//! polls the call again.
//!
//! Each poll is also a stretch on the thread that the watchdog times against
//! the VM's hold limit ([`Clock::on_thread`]).

use crate::worker::watchdog::Clock;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Runs `call` to its end, slice by slice, with `clock` told when it is on
/// its thread.
pub(super) async fn sliced<T>(clock: &Clock, call: impl Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    let wake = Arc::new(SelfWake::default());
    let waker = Waker::from(Arc::clone(&wake));
    let mut after_slice = false;
    loop {
        let polled = poll_fn(|cx| {
            wake.begin(cx.waker());
            clock.on_thread();
            let polled = call.as_mut().poll(&mut Context::from_waker(&waker));
            clock.off_thread();
            let woken = wake.end();
            match polled {
                Poll::Ready(v) => Poll::Ready(Some(v)),
                // Woken while it was polled: a slice ended, not a wait.
                Poll::Pending if woken => Poll::Ready(None),
                Poll::Pending => {
                    // The catch-up poll (see the module's doc).
                    if std::mem::take(&mut after_slice) {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        match polled {
            Some(v) => return v,
            None => {
                after_slice = true;
                tokio::task::yield_now().await
            }
        }
    }
}

/// The waker a sliced call sees: a wake during the poll is noted, one
/// after it is passed on to the task's own waker.
#[derive(Default)]
struct SelfWake {
    task: Mutex<Option<Waker>>,
    polling: AtomicBool,
    woken_while_polling: AtomicBool,
}

impl SelfWake {
    /// A poll begins on behalf of the task `task` wakes.
    fn begin(&self, task: &Waker) {
        let mut slot = self.task.lock().unwrap();
        if !slot.as_ref().is_some_and(|w| w.will_wake(task)) {
            *slot = Some(task.clone());
        }
        drop(slot);
        self.woken_while_polling.store(false, Ordering::Relaxed);
        self.polling.store(true, Ordering::SeqCst);
    }

    /// The poll ended; whether it was woken meanwhile.
    fn end(&self) -> bool {
        self.polling.store(false, Ordering::SeqCst);
        self.woken_while_polling.swap(false, Ordering::SeqCst)
    }
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.woken_while_polling.store(true, Ordering::SeqCst);
            // Still polling: `end` will see the note. A wake from another
            // thread can land after `end` read it, though; then the task's
            // waker gets it too (a second wake costs a spare poll at most).
            if self.polling.load(Ordering::SeqCst) {
                return;
            }
        }
        if let Some(task) = self.task.lock().unwrap().as_ref() {
            task.wake_by_ref();
        }
    }
}
