//! Deadlines of Luau calls: a [`Clock`] per VM, a flag its interrupt reads,
//! and one watchdog thread per process that sets the flag.
//!
//! Every [`SLICE`] the watchdog asks a running VM to yield (a CPU-bound
//! tenant cannot starve the others of its worker); at the call's deadline
//! it marks the call expired, and the interrupt raises
//! [`DeadlineExceeded`] at every safepoint until the call unwinds, `pcall`
//! or not. Host calls that await (KV, `time.sleep`, filters) stop at
//! [`Clock::remaining`].

use mlua::VmState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How long a VM runs before the watchdog asks it to yield to other tasks.
pub const SLICE: Duration = Duration::from_millis(5);

const RUN: u8 = 0;
const YIELD: u8 = 1;
const EXPIRED: u8 = 2;

/// The error a call raises when its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// The per-VM flag the interrupt reads, and the running call's deadline.
#[derive(Debug)]
pub struct Clock {
    flag: AtomicU8,
    /// How deep the running call is in coroutines it resumed itself.
    in_user_coroutines: AtomicU32,
    deadline: Mutex<Instant>,
    /// The master's id of the request the running call serves (0: none),
    /// which the call's log lines carry.
    request: AtomicU64,
}

impl Clock {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Clock {
            flag: AtomicU8::new(RUN),
            in_user_coroutines: AtomicU32::new(0),
            deadline: Mutex::new(Instant::now()),
            request: AtomicU64::new(0),
        })
    }

    /// Says which request the next call serves (`None`: no waited request).
    pub fn serve(&self, request: Option<u64>) {
        self.request.store(request.unwrap_or(0), Ordering::Relaxed);
    }

    /// The id of the request the running call serves.
    pub fn request_id(&self) -> Option<u64> {
        match self.request.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// The same, as log lines show it.
    pub fn request(&self) -> Option<String> {
        self.request_id()
            .map(crate::mesophyll::correlation::request_label)
    }

    /// Time left before the running call's deadline (zero when none runs).
    pub fn remaining(&self) -> Duration {
        self.deadline
            .lock()
            .unwrap()
            .saturating_duration_since(Instant::now())
    }

    pub(super) fn expired(&self) -> bool {
        self.flag.load(Ordering::Relaxed) == EXPIRED
    }

    /// Arms the clock for one call; the returned guard disarms it.
    pub(super) fn arm(self: &Arc<Self>, deadline: Instant) -> Armed {
        *self.deadline.lock().unwrap() = deadline;
        self.flag.store(RUN, Ordering::Relaxed);
        self.in_user_coroutines.store(0, Ordering::Relaxed);
        Watchdog::get().arm(Arc::clone(self))
    }

    /// What the VM's interrupt does at a safepoint: go on, yield the
    /// thread, or raise [`DeadlineExceeded`]. One atomic load when nothing
    /// is asked, so hot loops stay cheap.
    pub(super) fn interrupt(&self) -> mlua::Result<VmState> {
        match self.flag.load(Ordering::Relaxed) {
            RUN => Ok(VmState::Continue),
            YIELD => {
                self.flag.store(RUN, Ordering::Relaxed);
                // Inside a coroutine the script resumed, a yield would
                // return to the script, not to tokio: the coroutine would
                // seem to end early. Go on; the deadline still holds.
                if self.in_user_coroutines.load(Ordering::Relaxed) > 0 {
                    return Ok(VmState::Continue);
                }
                Ok(VmState::Yield)
            }
            _ => Err(mlua::Error::external(DeadlineExceeded)),
        }
    }

    /// One watchdog tick: ask the VM to yield, or expire its call.
    fn tick(&self, now: Instant) {
        if now >= *self.deadline.lock().unwrap() {
            self.flag.store(EXPIRED, Ordering::Relaxed);
        } else {
            let _ = self
                .flag
                .compare_exchange(RUN, YIELD, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// Luau that replaces `coroutine.resume` and `coroutine.wrap` with versions
/// calling `enter` and `leave` (its two arguments) around every resume.
const TRACKED_COROUTINES: &str = r#"
        local enter, leave = ...
        local create, native_resume = coroutine.create, coroutine.resume
        local pack, unpack = table.pack, table.unpack
        local function resume(co, ...)
            enter()
            local r = pack(native_resume(co, ...))
            leave()
            return unpack(r, 1, r.n)
        end
        coroutine.resume = resume
        coroutine.wrap = function(f)
            local co = create(f)
            return function(...)
                local r = pack(resume(co, ...))
                if r[1] then
                    return unpack(r, 2, r.n)
                end
                error(r[2], 0)
            end
        end
        "#;

/// Replaces `coroutine.resume` and `coroutine.wrap` with versions that
/// tell `clock` when the script runs inside a coroutine of its own, so that
/// the watchdog's yield requests are not taken as the coroutine's yields.
/// Call before the globals are frozen.
pub(super) fn track_user_coroutines(lua: &mlua::Lua, clock: &Arc<Clock>) -> mlua::Result<()> {
    let (inside, outside) = (Arc::clone(clock), Arc::clone(clock));
    let enter = lua.create_function(move |_, ()| {
        inside.in_user_coroutines.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })?;
    let leave = lua.create_function(move |_, ()| {
        let _ =
            outside
                .in_user_coroutines
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        Ok(())
    })?;
    // Compiled once per process, not once per VM: it is our own code.
    static BYTECODE: OnceLock<Vec<u8>> = OnceLock::new();
    let bytecode = BYTECODE.get_or_init(|| {
        crate::catalogue::plugin::compile(TRACKED_COROUTINES.as_bytes())
            .expect("the coroutine wrappers compile")
    });
    lua.load(&bytecode[..])
        .set_name("=meshplay")
        .set_mode(mlua::chunk::ChunkMode::Binary)
        .call::<()>((enter, leave))
}

/// The process-wide watchdog: one OS thread that ticks every armed clock
/// every [`SLICE`].
///
/// It is a thread and not a tokio task on purpose: a VM spinning in
/// `while true do end` holds its tokio worker thread until the interrupt
/// yields, and the interrupt only yields once the flag is set. A task would
/// wait for the very thread it is meant to free (and on a busy runtime the
/// timer driver may not run at all). The thread sleeps on a condition
/// variable once no call has run for [`IDLE_SLICES`], so an idle worker
/// costs nothing.
struct Watchdog {
    clocks: Mutex<Clocks>,
    wake: Condvar,
    next: AtomicU64,
    /// Times a call found the thread waiting and woke it.
    woken: AtomicU64,
}

/// Slices the watchdog goes on ticking with nothing armed before it waits
/// to be woken. A worker runs one call at a time on its thread, so the
/// table is empty between any two calls: a watchdog that waited as soon as
/// it found it empty was woken again by the next call, a futex syscall and
/// a thread woken on another core per call at low rates (one event in
/// flight), and its first tick on waking asked the new call to yield at
/// once. Ticking an empty table every slice for a second after the last
/// call is 200 cheap wake-ups instead.
const IDLE_SLICES: u32 = 200;

/// The clocks armed, and whether the watchdog waits for one.
#[derive(Default)]
struct Clocks {
    armed: HashMap<u64, Arc<Clock>>,
    /// Set by the watchdog when nothing was armed for [`IDLE_SLICES`] and
    /// it went to wait, cleared by whoever wakes it: only the first call
    /// after an idle spell pays the futex syscall that wakes the thread.
    waiting: bool,
    /// Set by every arming, cleared by every tick: whether a call started
    /// since the last tick, even one that has ended.
    armed_since_tick: bool,
}

impl Watchdog {
    fn get() -> &'static Watchdog {
        static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
                clocks: Mutex::new(Clocks::default()),
                wake: Condvar::new(),
                next: AtomicU64::new(0),
                woken: AtomicU64::new(0),
            }));
            std::thread::Builder::new()
                .name("meshplay-watchdog".into())
                .spawn(move || dog.run())
                .expect("cannot start the VM watchdog thread");
            dog
        })
    }

    fn arm(&'static self, clock: Arc<Clock>) -> Armed {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut clocks = self.clocks.lock().unwrap();
        clocks.armed.insert(id, clock);
        clocks.armed_since_tick = true;
        let waiting = std::mem::take(&mut clocks.waiting);
        drop(clocks);
        if waiting {
            self.woken.fetch_add(1, Ordering::Relaxed);
            self.wake.notify_one();
        }
        Armed { dog: self, id }
    }

    fn run(&self) {
        let mut idle = 0;
        loop {
            {
                let mut clocks = self.clocks.lock().unwrap();
                if std::mem::take(&mut clocks.armed_since_tick) || !clocks.armed.is_empty() {
                    idle = 0;
                    let now = Instant::now();
                    for clock in clocks.armed.values() {
                        clock.tick(now);
                    }
                } else if idle < IDLE_SLICES {
                    idle += 1;
                } else {
                    clocks.waiting = true;
                    // Whoever arms a clock clears `waiting`; anything else
                    // is a spurious wake-up. The first tick comes a slice
                    // after waking, not at once.
                    while clocks.waiting {
                        clocks = self.wake.wait(clocks).unwrap();
                    }
                    idle = 0;
                }
            }
            std::thread::sleep(SLICE);
        }
    }
}

/// Keeps a clock armed for the duration of one call.
pub(super) struct Armed {
    dog: &'static Watchdog,
    id: u64,
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.dog.clocks.lock().unwrap().armed.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_a_row_wake_the_watchdog_at_most_once() {
        let clock = Clock::new();
        let dog = Watchdog::get();
        let before = dog.woken.load(Ordering::Relaxed);
        // Short calls with gaps between them, as one event in flight makes
        // them: the watchdog finds the table empty between any two, and
        // at nearly every tick. Longer than IDLE_SLICES, so that a
        // watchdog that counted those empty ticks as idle would go to wait
        // (and be woken) at least twice.
        let start = std::time::Instant::now();
        let mut calls = 0;
        while start.elapsed() < SLICE * IDLE_SLICES * 5 / 2 {
            drop(clock.arm(Instant::now() + Duration::from_secs(5)));
            calls += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        let woken = dog.woken.load(Ordering::Relaxed) - before;
        assert!(woken <= 1, "{calls} calls woke the watchdog {woken} times");
    }
}
