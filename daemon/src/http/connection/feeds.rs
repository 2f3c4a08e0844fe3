//! The feeds every connection shares: one `top_feed` process computes the
//! `top` rows once a second, serialised once, for every subscribed page,
//! while any page subscribes (`Feeds`, owned by the HTTP listener).
//!
//! It computes and publishes; it never writes to a socket itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::reply::{self, Reply};
use crate::node::Node;
use system_runtime::top;
use system_runtime::{ProcessContext, Spec};

/// How often the shared `top` feed computes its rows (its window).
pub const TOP_INTERVAL: Duration = Duration::from_secs(1);

/// The feeds every connection shares (owned by the HTTP listener).
pub struct Feeds {
    /// The latest `top` message, serialised once for every subscriber.
    top: watch::Sender<Option<Arc<str>>>,
    /// True while the `top_feed` process runs; it runs while anyone
    /// subscribes (checked under this lock by both sides).
    top_running: Mutex<bool>,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            top: watch::channel(None).0,
            top_running: Mutex::new(false),
        }
    }
}

pub(super) type TopFeed = watch::Receiver<Option<Arc<str>>>;

impl Feeds {
    /// A subscription to `top`, and the latest message if it is current
    /// (the feed was running).
    pub(super) fn subscribe_top(self: &Arc<Self>, node: &Arc<Node>) -> (TopFeed, Option<Arc<str>>) {
        let feed = self.top.subscribe();
        let latest = self.ensure_top(node).then(|| feed.borrow().clone());
        (feed, latest.flatten())
    }

    /// Starts the `top_feed` process unless it runs (true if it did);
    /// never computes anything itself. A repeated subscribe calls it too,
    /// so a feed killed from the console comes back.
    pub(super) fn ensure_top(self: &Arc<Self>, node: &Arc<Node>) -> bool {
        let mut running = crate::lock(&self.top_running);
        if *running {
            return true;
        }
        *running = true;
        let (feeds, owner) = (self.clone(), node.clone());
        let spec = Spec::new("top_feed", "Web.TopFeed.init()");
        node.registry
            .clone()
            .spawn(spec, move |ctx| feeds.compute_top(ctx, owner));
        false
    }

    /// The `top_feed` process: one `top` of the registry per
    /// [`TOP_INTERVAL`], sent to every subscriber, until none is left.
    async fn compute_top(self: Arc<Self>, ctx: ProcessContext, node: Arc<Node>) {
        /// Marks the feed stopped if the process ends otherwise (a kill, a stop).
        struct Stopped<'a>(&'a Feeds, bool);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if self.1 {
                    *crate::lock(&self.0.top_running) = false;
                }
            }
        }
        let mut stopped = Stopped(&self, true);
        ctx.enter(&"Web.TopFeed.loop/1");
        loop {
            let rows = tokio::select! {
                rows = top::top(node.top_sources(), TOP_INTERVAL, 10) => rows,
                _ = node.shutdown.cancelled() => return,
            };
            // The biggest holders of memory now, for the page's other sort
            // (a walk of the registry on the blocking pool, once for all).
            let by_memory = top::by_memory(&node.registry, 10).await;
            let message = Reply::Top {
                rows: rows.into_iter().map(top_row).collect(),
                by_memory: by_memory.into_iter().map(top_row).collect(),
            }
            .to_text();
            self.top.send_replace(Some(message.into()));
            // Under the lock a subscriber takes before it looks: either it
            // sees the feed stopped and starts it, or the feed sees it.
            let mut running = crate::lock(&self.top_running);
            if self.top.receiver_count() == 0 {
                *running = false;
                stopped.1 = false;
                return;
            }
        }
    }
}

/// One row of the /top page.
fn top_row(row: top::TopRow) -> reply::TopRow {
    reply::TopRow {
        pid: row.pid,
        name: row.name,
        cpu: row.cpu,
        reductions: row.reductions,
        memory: row.memory,
        stuck_ms: row.stuck_ms,
        stuck_stack: row.stuck_stack,
    }
}
