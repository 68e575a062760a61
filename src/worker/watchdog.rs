//! Deadlines of Luau calls: a [`Clock`] per VM, a flag its interrupt reads,
//! and one watchdog thread per process that sets the flag.
//!
//! Every [`SLICE`] the watchdog asks a running VM to yield (a CPU-bound
//! tenant cannot starve the others of its worker); at the call's deadline
//! it marks the call expired, and the interrupt raises
//! [`DeadlineExceeded`] at every safepoint until the call unwinds, `pcall`
//! or not. Host calls that await (KV, `time.sleep`, filters) stop at
//! [`Clock::remaining`].
//!
//! Some code cannot yield: a metamethod or a `table.sort` comparator runs
//! under a C call, where Luau has nowhere to return to. A tenant there
//! holds its worker's thread (and with one runtime thread, every other
//! tenant of the worker and the worker's heartbeats) until it returns. So
//! the watchdog also times how long each poll of a call has run: past the
//! VM's hold limit (`Clock::new`, `--vm-hold-ms`) it marks the call
//! held, and the interrupt raises [`HeldTooLong`] the same way. Coroutines
//! a script resumes itself do yield: the watchdog's pause travels up
//! through every coroutine to tokio and back down
//! (`track_user_coroutines`).

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
/// Asked to yield inside a coroutine the script resumed: the coroutine
/// yields, and the script's `coroutine.resume` passes the pause on.
const PAUSING: u8 = 3;
/// Ran past the hold limit without giving the thread back.
const HELD: u8 = 4;

/// The error a call raises when its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// The error a call raises when it held its worker's thread past the hold
/// limit without yielding.
#[derive(Debug, thiserror::Error)]
#[error("held the worker's thread for over {} ms without yielding", .0.as_millis())]
pub struct HeldTooLong(pub Duration);

/// Where the process's clock starts, for times kept in atomics.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The per-VM flag the interrupt reads, and the running call's deadline.
#[derive(Debug)]
pub struct Clock {
    flag: AtomicU8,
    /// How deep the running call is in coroutines it resumed itself.
    in_user_coroutines: AtomicU32,
    /// Those coroutines, outermost first, by their Luau thread's address:
    /// only the innermost may be paused, as only its resumer knows to pass
    /// the pause on.
    resumed: Mutex<Vec<usize>>,
    deadline: Mutex<Instant>,
    /// The master's id of the request the running call serves (0: none),
    /// which the call's log lines carry.
    request: AtomicU64,
    /// When the running poll of the call began, in nanoseconds since
    /// [`epoch`] plus one (0: the call is not on the thread now).
    polled_since: AtomicU64,
    /// The longest one poll may run.
    hold: Duration,
}

impl Clock {
    /// A clock whose calls may run at most `hold` at a time without giving
    /// their thread back.
    pub(super) fn new(hold: Duration) -> Arc<Self> {
        Arc::new(Clock {
            flag: AtomicU8::new(RUN),
            in_user_coroutines: AtomicU32::new(0),
            resumed: Mutex::new(Vec::new()),
            deadline: Mutex::new(Instant::now()),
            request: AtomicU64::new(0),
            polled_since: AtomicU64::new(0),
            hold,
        })
    }

    /// The hold limit this clock enforces.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Says the call is on its thread from now (a poll begins).
    pub(super) fn on_thread(&self) {
        let since = Instant::now().duration_since(epoch()).as_nanos() as u64 + 1;
        self.polled_since.store(since, Ordering::Relaxed);
    }

    /// Says the call gave its thread back (a poll ended).
    pub(super) fn off_thread(&self) {
        self.polled_since.store(0, Ordering::Relaxed);
    }

    /// Whether the call ended because it held its thread too long.
    pub(super) fn held(&self) -> bool {
        self.flag.load(Ordering::Relaxed) == HELD
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
        self.resumed.lock().unwrap().clear();
        self.polled_since.store(0, Ordering::Relaxed);
        Watchdog::get().arm(Arc::clone(self))
    }

    /// What the VM's interrupt does at a safepoint: go on, yield the
    /// thread, or raise [`DeadlineExceeded`]. One atomic load when nothing
    /// is asked, so hot loops stay cheap.
    pub(super) fn interrupt(&self, lua: &mlua::Lua) -> mlua::Result<VmState> {
        match self.flag.load(Ordering::Relaxed) {
            RUN => Ok(VmState::Continue),
            YIELD if self.in_user_coroutines.load(Ordering::Relaxed) == 0 => {
                self.flag.store(RUN, Ordering::Relaxed);
                Ok(VmState::Yield)
            }
            // Inside a coroutine the script resumed, a yield returns to the
            // script's `coroutine.resume`, which must know it was ours and
            // pass it on rather than take it as the coroutine's own. Only
            // the innermost coroutine is paused this way: anywhere else (a
            // resumer between two resumes) the request waits for the next
            // safepoint.
            YIELD | PAUSING if self.in_innermost(lua) => {
                // A PAUSING still set here means the last yield did not
                // happen (this point cannot yield; mlua then goes on): ask
                // again. Every call passes a safepoint, so the coroutine's
                // own `coroutine.yield` cannot come first.
                self.flag.store(PAUSING, Ordering::Relaxed);
                Ok(VmState::Yield)
            }
            YIELD | PAUSING => Ok(VmState::Continue),
            HELD => Err(mlua::Error::external(HeldTooLong(self.hold))),
            _ => Err(mlua::Error::external(DeadlineExceeded)),
        }
    }

    /// Whether the running Luau thread is the innermost coroutine the
    /// script resumed. Asked only when a yield is due (every [`SLICE`]).
    fn in_innermost(&self, lua: &mlua::Lua) -> bool {
        let running = lua.current_thread().to_pointer() as usize;
        self.resumed.lock().unwrap().last() == Some(&running)
    }

    /// The script resumes coroutine `co`.
    fn entered_coroutine(&self, co: usize) {
        self.resumed.lock().unwrap().push(co);
        self.in_user_coroutines.fetch_add(1, Ordering::Relaxed);
    }

    /// A coroutine the script resumed has given control back: `true` when
    /// the watchdog paused it (the caller must pass the pause on), `false`
    /// when it yielded or ended by itself.
    fn left_coroutine(&self) -> bool {
        self.resumed.lock().unwrap().pop();
        let _ = self
            .in_user_coroutines
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.flag
            .compare_exchange(PAUSING, RUN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// What a watchdog tick does when the call has time left: ask the VM
    /// to yield at its next safepoint (tests land a tick where they want).
    #[cfg(test)]
    pub(crate) fn ask_to_yield(&self) {
        let _ = self
            .flag
            .compare_exchange(RUN, YIELD, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One watchdog tick: ask the VM to yield, or end its call for its
    /// deadline or for holding the thread.
    fn tick(&self, now: Instant) {
        if now >= *self.deadline.lock().unwrap() {
            self.flag.store(EXPIRED, Ordering::Relaxed);
            return;
        }
        let since = self.polled_since.load(Ordering::Relaxed);
        if since != 0 {
            let polled_at = epoch() + Duration::from_nanos(since - 1);
            if now.saturating_duration_since(polled_at) > self.hold {
                self.flag.store(HELD, Ordering::Relaxed);
                return;
            }
        }
        let _ = self
            .flag
            .compare_exchange(RUN, YIELD, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Luau that replaces `coroutine.resume` and `coroutine.wrap` with versions
/// calling `enter` and `leave` (its first two arguments) around every
/// resume. When `leave` says the watchdog paused the coroutine (or the
/// coroutine is a resumer passing a pause up), the pause is passed up in
/// turn (yielding `PAUSE`: to the next such `resume`, or at the top to
/// mlua, which hands the thread back to tokio) and the coroutine is
/// resumed where it was paused.
const TRACKED_COROUTINES: &str = r#"
        local enter, leave = ...
        local create, native_resume = coroutine.create, coroutine.resume
        local yield, isyieldable = coroutine.yield, coroutine.isyieldable
        local pack, unpack = table.pack, table.unpack
        -- What a resumer yields to pass a pause up: nothing else can
        -- yield it, as no script can reach it.
        local PAUSE = {}
        local function paused(r)
            return leave() or (r.n == 2 and r[1] == true and r[2] == PAUSE)
        end
        local function resume(co, ...)
            if type(co) ~= "thread" then
                return native_resume(co, ...)
            end
            enter(co)
            local r = pack(native_resume(co, ...))
            while paused(r) do
                -- Where nothing can yield (a metamethod), the pause is
                -- dropped: the hold limit still bounds the call.
                if isyieldable() then
                    yield(PAUSE)
                end
                enter(co)
                r = pack(native_resume(co))
            end
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
    let enter = lua.create_function(move |_, co: mlua::Thread| {
        inside.entered_coroutine(co.to_pointer() as usize);
        Ok(())
    })?;
    let leave = lua.create_function(move |_, ()| Ok(outside.left_coroutine()))?;
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
        let clock = Clock::new(Duration::from_secs(1));
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
