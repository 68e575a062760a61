//! A VM's sandbox, deadlines and memory cap, against real Luau.

use super::*;
use serde_json::Value;

fn vm() -> Vm {
    Vm::new(
        &Tenant::new("t", "1"),
        VmLimits::default(),
        &Services::bare(),
    )
    .unwrap()
}

async fn run(vm: &mut Vm, code: &str, ms: u64) -> Result<Value, RemoteError> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    vm.run_script("test", code, &Event::default(), deadline)
        .await
        .map(|v| v.to_value())
}

#[tokio::test]
async fn scripts_return_json() {
    let mut vm = vm();
    let v = run(&mut vm, "return { a = 1, b = {1, 2}, c = 'x' }", 1000)
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"a": 1, "b": [1, 2], "c": "x"}));
}

#[tokio::test]
async fn a_runaway_loop_times_out_even_under_pcall_and_the_vm_lives_on() {
    let mut vm = vm();
    let err = run(
        &mut vm,
        "while true do pcall(function() while true do end end) end",
        100,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(!vm.is_poisoned());
    assert_eq!(run(&mut vm, "return 2 + 2", 1000).await.unwrap(), 4);
    // The interrupt still works for the next runaway in the same VM.
    let err = run(&mut vm, "while true do end", 100).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_vm_yields_its_thread_to_other_vms() {
    // One thread for both: the quick call can only finish first if the
    // spinning one hands the thread back while it runs.
    let mut slow = vm();
    let mut quick = vm();
    let order = std::sync::Mutex::new(Vec::new());
    let spin = async {
        let r = run(&mut slow, "while true do end", 500).await;
        order.lock().unwrap().push("slow");
        r
    };
    let fast = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = run(&mut quick, "return 1", 1000).await;
        order.lock().unwrap().push("quick");
        r
    };
    let (s, q) = tokio::join!(spin, fast);
    assert_eq!(s.unwrap_err().kind, ErrorKind::Timeout);
    assert_eq!(q.unwrap(), 1);
    assert_eq!(*order.lock().unwrap(), ["quick", "slow"]);
}

#[tokio::test]
async fn a_memory_bomb_is_a_memory_error_that_poisons_the_vm() {
    let mut vm = vm();
    let err = run(
        &mut vm,
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end",
        10_000,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Memory, "{err}");
    assert!(vm.is_poisoned());
}

#[tokio::test]
async fn there_is_no_require_and_the_globals_are_frozen() {
    let mut vm = vm();
    let err = run(&mut vm, "return require('os')", 1000)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Runtime);
    let err = run(&mut vm, "string.rep = nil", 1000).await.unwrap_err();
    assert!(err.message.contains("readonly"), "{err}");
}

#[tokio::test]
async fn script_globals_persist_within_a_vm_only() {
    let mut vm1 = vm();
    run(&mut vm1, "counter = 41", 1000).await.unwrap();
    assert_eq!(run(&mut vm1, "return counter + 1", 1000).await.unwrap(), 42);
    let mut vm2 = vm();
    assert_eq!(
        run(&mut vm2, "return counter", 1000).await.unwrap(),
        Value::Null
    );
}

#[tokio::test]
async fn runtime_errors_carry_the_line() {
    let mut vm = vm();
    let err = run(&mut vm, "local x = 1\nerror('boom')", 1000)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert!(
        err.message.contains("test:2") && err.message.contains("boom"),
        "{err}"
    );
    let err = run(&mut vm, "return (", 1000).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Syntax, "{err}");
}

#[tokio::test]
async fn sleeping_past_the_deadline_is_a_timeout() {
    let mut vm = vm();
    let err = run(&mut vm, "time.sleep(60000)", 100).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

#[tokio::test]
async fn a_script_that_is_bytecode_is_refused_as_text() {
    let bytecode = crate::catalogue::plugin::compile(b"return 42").unwrap();
    let code = String::from_utf8(bytecode).expect("this chunk's bytecode is UTF-8");
    let mut vm = vm();
    let err = run(&mut vm, &code, 1000).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Syntax, "{err}");
    assert_eq!(run(&mut vm, "return 1", 1000).await.unwrap(), 1);
}

#[tokio::test]
async fn an_absurd_sleep_is_a_timeout_not_a_panic() {
    let mut vm = vm();
    for ms in ["1e300", "math.huge", "2^64"] {
        let err = run(&mut vm, &format!("time.sleep({ms})"), 100)
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind, ErrorKind::Timeout | ErrorKind::Runtime),
            "{ms}: {err}"
        );
    }
    assert_eq!(run(&mut vm, "return 1", 1000).await.unwrap(), 1);
}

#[tokio::test]
async fn a_long_loop_in_a_user_coroutine_is_not_cut_short_by_the_watchdog() {
    let mut vm = vm();
    // Longer than a watchdog slice, shorter than the deadline: the
    // coroutine must run to its end, not be yielded out of by the
    // watchdog's "give the thread back" request.
    let code = "
        local function work()
            local x = 0
            local t = os.clock()
            while os.clock() - t < 0.05 do x += 1 end
            return 'done'
        end
        local wrapped = coroutine.wrap(work)()
        local ok, resumed = coroutine.resume(coroutine.create(work))
        return { wrapped, ok, resumed }
    ";
    assert_eq!(
        run(&mut vm, code, 2000).await.unwrap(),
        serde_json::json!(["done", true, "done"])
    );
    // Yields the script asks for still work, and runaways still end.
    let code = "
        local co = coroutine.wrap(function() coroutine.yield(1) return 2 end)
        return { co(), co() }
    ";
    assert_eq!(
        run(&mut vm, code, 1000).await.unwrap(),
        serde_json::json!([1, 2])
    );
    let err = run(
        &mut vm,
        "coroutine.wrap(function() while true do end end)()",
        200,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

fn plugin(version: &str, entry: &str) -> Arc<Plugin> {
    let bundle = crate::mesophyll::db::PluginBundle {
        name: "p".into(),
        manifest: format!("name='p'\nversion='{version}'\nevents=['a','b','c','d','gone']"),
        files: [("init.luau".to_string(), entry.to_string())].into(),
    };
    Arc::new(crate::catalogue::plugin::build(&bundle).unwrap())
}

async fn dispatch(vm: &mut Vm, plugin: &Arc<Plugin>, name: &str) -> Result<Value, RemoteError> {
    let event = Event {
        name: name.into(),
        data: serde_json::json!({"n": 1}).into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    vm.handle_event(plugin, &event, deadline)
        .await
        .map(|v| v.to_value())
}

#[tokio::test]
async fn the_dispatcher_finds_calls_and_misses_handlers_as_declared() {
    let mut vm = vm();
    let v1 = plugin(
        "1",
        "return {
            a = function(event, ctx) return { event.name, event.data.n, event.tenant.id, ctx.version } end,
            b = function() end,
            c = function() return 1, 2 end,
            d = 42,
        }",
    );
    let a = dispatch(&mut vm, &v1, "a").await.unwrap();
    assert_eq!(a, serde_json::json!(["a", 1, "1", "1"]));
    // Nothing returned is null; of several values, the first.
    assert_eq!(dispatch(&mut vm, &v1, "b").await.unwrap(), Value::Null);
    assert_eq!(
        dispatch(&mut vm, &v1, "c").await.unwrap(),
        serde_json::json!(1)
    );
    let err = dispatch(&mut vm, &v1, "d").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Runtime, "{err:?}");
    let err = dispatch(&mut vm, &v1, "gone").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");
    assert!(
        err.message.contains("returns no handler"),
        "{}",
        err.message
    );
    // A new version of the plugin is bound afresh, its ctx with it.
    let v2 = plugin(
        "2",
        "return { gone = function(_, ctx) return ctx.version end }",
    );
    assert_eq!(
        dispatch(&mut vm, &v2, "gone").await.unwrap(),
        serde_json::json!("2")
    );
    let err = dispatch(&mut vm, &v2, "a").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(!vm.is_poisoned());
}

#[tokio::test]
async fn print_is_log_info_not_the_workers_stdout() {
    let mut vm = vm();
    assert_eq!(
        run(
            &mut vm,
            "print('hello\\nthere') return print == log.info",
            1000
        )
        .await
        .unwrap(),
        Value::Bool(true)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_wake_that_comes_while_a_slice_ends_is_not_lost() {
    // The watchdog's tick lands while an awaited host call is polled; the
    // interrupt then yields in mlua's poll loop, between the future's
    // poll and the loop's own pending yield. The future's wake (here from
    // another task, so it comes while the slice's yield_now waits) must
    // still get the future polled again, and not wait for the deadline.
    let mut vm = vm();
    let clock = Arc::clone(&vm.clock);
    let probe = vm
        .lua
        .create_async_function(move |_, ()| {
            let clock = Arc::clone(&clock);
            let mut first = true;
            async move {
                std::future::poll_fn(|cx| {
                    if !std::mem::take(&mut first) {
                        return std::task::Poll::Ready(Ok(7));
                    }
                    clock.ask_to_yield();
                    let waker = cx.waker().clone();
                    tokio::spawn(async move { waker.wake() });
                    std::task::Poll::Pending
                })
                .await
            }
        })
        .unwrap();
    vm.script_env.raw_set("probe", probe).unwrap();
    let started = std::time::Instant::now();
    let v = run(&mut vm, "return probe()", 3000).await;
    assert_eq!(v.unwrap(), 7);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
