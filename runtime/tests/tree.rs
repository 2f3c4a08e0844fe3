//! The process table's page (`processes`) and the supervision tree (`tree`)
//! in a real tokio runtime: the page picks exactly the processes a full
//! sort would, filters and pages; the tree shows a supervisor's policy and
//! children (folded when uniform, restarts followed), a host's own
//! supervisor registered through the registry, the processes no
//! supervisor knows, and forgets a supervisor that ended.

use std::sync::Arc;

use system_runtime::processes::{self, Order, ProcessPages, Query, SortKey};
use system_runtime::supervision::{Policy, Restart, Strategy, SupervisedChild, Supervises};
use system_runtime::supervisor::{self, Child, Intensity};
use system_runtime::tree::{self, Kind, UNSUPERVISED};
use system_runtime::{Pid, ProcessContext, ProcessRegistry, Spec};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

fn spec(name: &'static str) -> Spec {
    Spec::new(name, format!("Test.{name}()"))
}

/// A process that counts `reductions` once, says so, then waits forever.
fn counted(
    registry: &Arc<ProcessRegistry>,
    name: &'static str,
    reductions: u64,
) -> (Pid, oneshot::Receiver<()>) {
    let (ready, counted) = oneshot::channel();
    let pid = registry.spawn(spec(name), move |ctx: ProcessContext| async move {
        ctx.add_reductions(reductions);
        let _ = ready.send(());
        std::future::pending::<()>().await;
    });
    (pid, counted)
}

/// A page comes from a census of the table that serves other pages for a
/// while (`processes::Census`), but never one older than `MAX_AGE`: a
/// process spawned after a page is on a page read `MAX_AGE` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore = "walks the 1,024-shard table; waits a second")]
async fn a_page_is_never_older_than_its_census_may_be() {
    let registry = ProcessRegistry::new();
    let pages = ProcessPages::new(registry.clone());
    let named = |name: &str| Query {
        name: Some(name.to_owned()),
        ..Query::default()
    };
    let (_, counted_first) = counted(&registry, "first_one", 1);
    counted_first.await.expect("counted");
    assert_eq!(pages.page(named("_one")).await.total, 1);
    let (late, counted_late) = counted(&registry, "late_one", 1);
    counted_late.await.expect("counted");
    tokio::time::sleep(processes::MAX_AGE).await;
    let page = pages.page(named("_one")).await;
    assert_eq!(page.total, 2);
    assert!(page.rows.iter().any(|row| row.pid == late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "walks the 1,024-shard table again and again: far too slow under Miri (the selection and folding have no unsafe; their unit tests run under it)"
)]
async fn a_page_is_what_a_full_sort_would_give_filtered_and_paged() {
    let registry = ProcessRegistry::new();
    let pages = ProcessPages::new(registry.clone());
    let mut expected = Vec::new();
    for i in 0..200u64 {
        // Reductions in a scrambled order, some equal (ties go by pid).
        let reductions = (i * 37) % 101;
        let name = if i % 2 == 0 { "even_one" } else { "odd_one" };
        let (pid, counted) = counted(&registry, name, reductions);
        counted.await.expect("counted");
        expected.push((reductions, pid, name));
    }
    // Busiest first, equal reductions by ascending pid.
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let query = Query {
        sort: SortKey::Reductions,
        order: Order::Descending,
        offset: 30,
        limit: 25,
        name: None,
        status: None,
    };
    let page = pages.page(query.clone()).await;
    assert_eq!(page.total, 200);
    // (Each poll counts one reduction too: the same for all.)
    let got: Vec<Pid> = page.rows.iter().map(|row| row.pid).collect();
    let want: Vec<Pid> = expected[30..55].iter().map(|(_, pid, _)| *pid).collect();
    assert_eq!(got, want);
    assert!(
        page.rows
            .windows(2)
            .all(|w| w[0].reductions >= w[1].reductions)
    );

    // Ascending, filtered by a part of the name in another case.
    let odd = pages
        .page(Query {
            order: Order::Ascending,
            offset: 0,
            limit: 1000,
            name: Some("ODD".into()),
            ..query.clone()
        })
        .await;
    assert_eq!((odd.total, odd.rows.len()), (100, 100));
    assert!(odd.rows.iter().all(|row| row.name == "odd_one"));
    assert!(
        odd.rows
            .windows(2)
            .all(|w| w[0].reductions <= w[1].reductions)
    );

    // Every page once: no pid twice, none missed; past the end, nothing.
    let mut seen = std::collections::HashSet::new();
    for offset in (0..200).step_by(30) {
        let page = pages
            .page(Query {
                sort: SortKey::Age,
                offset,
                limit: 30,
                ..query.clone()
            })
            .await;
        for row in page.rows {
            assert!(seen.insert(row.pid), "{} twice", row.pid);
        }
    }
    assert_eq!(seen.len(), 200);
    let beyond = pages
        .page(Query {
            offset: 200,
            ..query
        })
        .await;
    assert_eq!((beyond.total, beyond.rows.len()), (200, 0));
}

/// A host's own supervisor: a fixed list of children.
struct Fixed(Vec<SupervisedChild>);

impl Supervises for Fixed {
    fn policy(&self) -> Policy {
        Policy {
            strategy: Strategy::OneForOne,
            intensity: None,
        }
    }

    fn children(&self, into: &mut Vec<SupervisedChild>) {
        into.extend_from_slice(&self.0);
    }
}

/// Builds the tree until `done` holds for it (the supervisor starts its
/// children when it is first polled).
async fn tree_when(
    registry: &Arc<ProcessRegistry>,
    done: impl Fn(&[tree::Node]) -> bool,
) -> Vec<tree::Node> {
    for _ in 0..10_000 {
        let tree = tree::tree(registry).await;
        if done(&tree) {
            return tree;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "the tree never became what was expected: {:#?}",
        tree::tree(registry).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "walks the 1,024-shard table again and again: far too slow under Miri (the selection and folding have no unsafe; their unit tests run under it)"
)]
async fn the_tree_shows_supervisors_children_folds_and_the_unsupervised() {
    let registry = ProcessRegistry::new();
    let shutdown = CancellationToken::new();
    let forever = |_ctx: ProcessContext| std::future::pending::<()>();
    let mut children: Vec<Child> = (0..6)
        .map(|_| Child::new(spec("worker"), forever))
        .collect();
    children.push(Child::new(spec("helper"), forever).restart(Restart::Temporary));
    // A host supervisor (its own kind) as a child: it registers its view.
    let (host_ready, host_registered) = oneshot::channel::<Vec<Pid>>();
    let host_ready = Arc::new(std::sync::Mutex::new(Some(host_ready)));
    let host_registry = registry.clone();
    children.push(Child::new(
        spec("host_supervisor"),
        move |ctx: ProcessContext| {
            let registry = host_registry.clone();
            let ready = host_ready.clone();
            async move {
                let pids: Vec<Pid> = (0..2)
                    .map(|_| registry.spawn(spec("host_worker"), |_| std::future::pending()))
                    .collect();
                let view = Fixed(
                    pids.iter()
                        .map(|pid| SupervisedChild {
                            pid: *pid,
                            restart: Restart::Transient,
                        })
                        .collect(),
                );
                let _supervising = registry.supervising(ctx.pid(), Arc::new(view));
                if let Some(ready) = ready.lock().expect("lock").take() {
                    let _ = ready.send(pids);
                }
                std::future::pending::<()>().await;
            }
        },
    ));
    let root = supervisor::start(
        &registry,
        spec("root"),
        children,
        Intensity::default(),
        shutdown.clone(),
    );
    let root_pid = root.pid();
    let host_workers = host_registered
        .await
        .expect("the host supervisor registered");
    let loose = registry.spawn(spec("loose"), |_| std::future::pending());

    let shape = |tree: &[tree::Node]| tree.first().is_some_and(|root| root.children.len() == 3);
    let tree = tree_when(&registry, shape).await;
    let root_node = &tree[0];
    assert_eq!(
        (root_node.pid, root_node.kind, root_node.restart),
        (Some(root_pid), Kind::Supervisor, None)
    );
    assert_eq!(
        root_node.policy,
        Some(Policy {
            strategy: Strategy::OneForOne,
            intensity: Some(Intensity::default())
        })
    );
    let workers = &root_node.children[0];
    assert_eq!(
        (
            workers.name.as_str(),
            workers.kind,
            workers.count,
            workers.restart,
            workers.is_folded()
        ),
        ("worker", Kind::Worker, 6, Some(Restart::Permanent), true)
    );
    let helper = &root_node.children[1];
    assert_eq!(
        (helper.name.as_str(), helper.count, helper.restart),
        ("helper", 1, Some(Restart::Temporary))
    );
    let host = &root_node.children[2];
    assert_eq!(
        (host.name.as_str(), host.kind),
        ("host_supervisor", Kind::Supervisor)
    );
    assert_eq!(host.policy.map(|p| p.intensity), Some(None));
    let host_children: Vec<(Option<Pid>, &str, Option<Restart>)> = host
        .children
        .iter()
        .map(|child| (child.pid, child.name.as_str(), child.restart))
        .collect();
    assert_eq!(
        host_children,
        host_workers
            .iter()
            .map(|pid| (Some(*pid), "host_worker", Some(Restart::Transient)))
            .collect::<Vec<_>>(),
        "two host workers are too few to fold"
    );
    let unsupervised = &tree[1];
    assert_eq!(
        (
            unsupervised.name.as_str(),
            unsupervised.kind,
            unsupervised.pid
        ),
        (UNSUPERVISED, Kind::Group, None)
    );
    assert_eq!(
        unsupervised
            .children
            .iter()
            .map(|c| c.pid)
            .collect::<Vec<_>>(),
        [Some(loose)]
    );

    // A killed worker is restarted: still six, under their supervisor.
    let first_worker = workers.pid.expect("the fold's first pid");
    let down = registry.monitor(first_worker);
    assert!(registry.kill(first_worker));
    down.await;
    let tree = tree_when(&registry, |tree| {
        tree.first().is_some_and(|root| {
            root.children
                .first()
                .is_some_and(|w| w.count == 6 && w.pid != Some(first_worker))
        })
    })
    .await;
    assert!(
        tree[0].children[0]
            .pid
            .is_some_and(|pid| pid > first_worker)
    );

    // The supervisor ends: it and its children leave the tree.
    shutdown.cancel();
    root.await;
    let tree = tree_when(&registry, |tree| {
        !tree.iter().any(|node| node.kind == Kind::Supervisor)
    })
    .await;
    assert!(
        tree.iter().all(|node| node.name == UNSUPERVISED),
        "{tree:#?}"
    );
}
