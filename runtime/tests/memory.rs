//! Memory per process, with a counting allocator standing for the host's
//! (jemalloc's per-thread counters in the daemon): what a process's polls
//! allocate is charged to it, what they free credited, a spawn is charged
//! to the new process, and a process over its limit is killed alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use system_runtime::memory::{ThreadCounters, install_allocator_counters};
use system_runtime::{ExitReason, ProcessRegistry, Spec};
use tokio::sync::oneshot;

/// `System`, counting each thread's bytes in two thread-local counters.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static DEALLOCATED: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to `System` unchanged; the counters are
// const thread-locals without destructors, so touching them never
// allocates or recurses into the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|n| n.set(n.get() + layout.size() as u64));
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        DEALLOCATED.with(|n| n.set(n.get() + layout.size() as u64));
        // SAFETY: as above, `GlobalAlloc::dealloc`'s contract passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn counters() -> Option<ThreadCounters> {
    Some(ThreadCounters {
        allocated: ALLOCATED.with(Cell::as_ptr),
        deallocated: DEALLOCATED.with(Cell::as_ptr),
    })
}

fn registry() -> std::sync::Arc<ProcessRegistry> {
    // SAFETY: the counters are this thread's own thread-locals, which live
    // as long as the thread and are written only by its allocations.
    unsafe { install_allocator_counters(counters) };
    ProcessRegistry::new()
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "current_thread")]
async fn what_a_process_holds_is_charged_to_it_and_what_it_frees_credited() {
    let registry = registry();
    let (held_tx, held_rx) = oneshot::channel::<()>();
    let (free_tx, free_rx) = oneshot::channel::<()>();
    let (freed_tx, freed_rx) = oneshot::channel::<()>();
    let pid = registry.spawn(Spec::new("holder", "Test.holder()"), |ctx| async move {
        let block = vec![1u8; MIB];
        let _ = held_tx.send(());
        let _ = free_rx.await;
        drop(block);
        let _ = freed_tx.send(());
        ctx.sleep(std::time::Duration::from_secs(60)).await;
    });
    held_rx.await.unwrap();
    let info = registry.info(pid).unwrap();
    assert!(info.memory >= MIB as u64, "held {}", info.memory);
    assert!(info.allocated >= MIB as u64);
    free_tx.send(()).unwrap();
    freed_rx.await.unwrap();
    // `freed_tx.send` returns inside the poll; the poll's end accounts it.
    tokio::task::yield_now().await;
    let info = registry.info(pid).unwrap();
    assert!(info.memory < 64 * 1024, "still held {}", info.memory);
    assert!(info.allocated >= MIB as u64, "allocated {}", info.allocated);
}

#[tokio::test(flavor = "current_thread")]
async fn a_spawn_is_charged_to_the_new_process_not_its_parent() {
    let registry = registry();
    let (done_tx, done_rx) = oneshot::channel();
    let children = registry.clone();
    let parent = registry.spawn(Spec::new("parent", "Test.parent()"), |ctx| async move {
        let pids: Vec<_> = (0..100)
            .map(|_| {
                children.spawn(Spec::new("child", "Test.child()"), |ctx| async move {
                    // A child whose state is 16 KiB.
                    let state = [7u8; 16 * 1024];
                    ctx.sleep(std::time::Duration::from_secs(60)).await;
                    std::hint::black_box(state);
                })
            })
            .collect();
        let _ = done_tx.send(pids);
        ctx.sleep(std::time::Duration::from_secs(60)).await;
    });
    let pids = done_rx.await.unwrap();
    tokio::task::yield_now().await;
    let parent = registry.info(parent).unwrap();
    // The parent keeps only the pids' vector (800 B), not 100 tasks of 16 KiB.
    assert!(parent.memory < 64 * 1024, "parent holds {}", parent.memory);
    let child = registry.info(pids[0]).unwrap();
    assert!(child.memory >= 16 * 1024, "child holds {}", child.memory);
}

#[tokio::test(flavor = "current_thread")]
async fn a_process_over_its_limit_is_killed_alone_with_the_reason() {
    let registry = registry();
    let neighbour = registry.spawn(
        Spec::new("neighbour", "Test.neighbour()"),
        |ctx| async move {
            let _kept = vec![1u8; MIB / 2];
            ctx.sleep(std::time::Duration::from_secs(60)).await;
        },
    );
    let monitor = registry.spawn_monitor(
        Spec::new("leaker", "Test.leaker()").memory_limit(MIB as u64),
        |ctx| async move {
            let mut kept = Vec::new();
            loop {
                kept.push(vec![1u8; 256 * 1024]);
                ctx.yield_now().await;
            }
        },
    );
    let down = monitor.await;
    match down.reason {
        ExitReason::MemoryLimit { limit, reached } => {
            assert_eq!(limit, MIB as u64);
            assert!(reached > limit && reached < 2 * MIB as u64, "{reached}");
        }
        other => panic!("ended with {other:?}"),
    }
    assert!(down.reason.to_string().starts_with("memory_limit: held 1."));
    assert!(registry.is_alive(neighbour));
    assert_eq!(registry.memory_limit_kills(), 1);
    let holders = registry.memory();
    let neighbour = holders.iter().find(|h| h.pid == neighbour).unwrap();
    assert!(neighbour.memory >= MIB as u64 / 2);
}
