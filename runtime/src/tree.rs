//! `Runtime.tree()`: the supervision tree, from each root supervisor down,
//! as the supervisors registered it (`supervision`), with the processes no
//! supervisor knows under one synthetic group at the end.
//!
//! Big uniform branches are folded: siblings that are workers of one name
//! and one restart type, at least [`FOLD_AT`] of them, become one node
//! standing for all ("load_worker × 1,000,000"), and a node shows at most
//! [`MAX_CHILDREN`] children, the rest counted in one "other processes"
//! group, so the tree stays small at any load.
//!
//! It walks the whole registry: call [`tree`] (which runs on the blocking
//! pool), never [`build`] on a scheduler. It knows nothing of how a tree
//! is shown (the host draws it as text or JSON).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::supervision::{Policy, Restart, SupervisedChild};
use crate::{Pid, ProcessRegistry};

/// Uniform sibling workers at least this many are folded into one node.
pub const FOLD_AT: usize = 4;

/// The most children one node shows (after folding).
pub const MAX_CHILDREN: usize = 40;

/// The synthetic group's name for processes no supervisor knows.
pub const UNSUPERVISED: &str = "unsupervised";

/// The group's name for children beyond [`MAX_CHILDREN`].
pub const OTHERS: &str = "other processes";

/// What a node of the tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Supervisor,
    Worker,
    /// Not a process: a synthetic node holding others (the unsupervised
    /// processes, a node's children beyond [`MAX_CHILDREN`]).
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Supervisor => "supervisor",
            Kind::Worker => "worker",
            Kind::Group => "group",
        }
    }
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The process (a folded node: the first of those it stands for);
    /// `None` for a group.
    pub pid: Option<Pid>,
    pub name: String,
    pub kind: Kind,
    /// A supervisor's.
    pub policy: Option<Policy>,
    /// How its supervisor restarts it (`None` for a root or a group).
    pub restart: Option<Restart>,
    pub children: Vec<Node>,
    /// How many processes it stands for: 1, more for a folded node, the
    /// number of processes inside for a group.
    pub count: usize,
}

impl Node {
    /// True if it stands for several uniform siblings.
    pub fn is_folded(&self) -> bool {
        self.kind == Kind::Worker && self.count > 1
    }
}

/// The tree now, read on the blocking pool.
pub async fn tree(registry: &Arc<ProcessRegistry>) -> Vec<Node> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || build(&registry))
        .await
        .unwrap_or_default()
}

/// The tree now: every root supervisor (one no other supervisor lists),
/// by pid, then the group of unsupervised processes if there are any.
/// Walks the whole table: never on a scheduler.
pub fn build(registry: &ProcessRegistry) -> Vec<Node> {
    let supervisors: HashMap<Pid, (Policy, Vec<SupervisedChild>)> = registry
        .supervisors()
        .into_iter()
        .filter(|(pid, _)| registry.is_alive(*pid))
        .map(|(pid, view)| {
            let mut children = Vec::new();
            view.children(&mut children);
            (pid, (view.policy(), children))
        })
        .collect();
    let mut supervised: Vec<u64> = supervisors
        .values()
        .flat_map(|(_, children)| children.iter().map(|child| child.pid.0))
        .collect();
    supervised.sort_unstable();
    let mut roots: Vec<Pid> = supervisors
        .keys()
        .copied()
        .filter(|pid| supervised.binary_search(&pid.0).is_err())
        .collect();
    roots.sort_unstable();
    let mut names = Names { registry };
    let mut visited = HashSet::new();
    let mut tree: Vec<Node> = roots
        .iter()
        .filter_map(|root| supervisor_node(*root, None, &supervisors, &mut names, &mut visited))
        .collect();
    let mut loose = Vec::new();
    registry.for_each_entry(|entry| {
        let pid = entry.pid;
        if supervised.binary_search(&pid.0).is_err() && !supervisors.contains_key(&pid) {
            loose.push((pid, entry.spec.name.to_string()));
        }
    });
    if !loose.is_empty() {
        loose.sort_unstable_by_key(|(pid, _)| *pid);
        let count = loose.len();
        let workers = loose
            .into_iter()
            .map(|(pid, name)| worker(pid, name, None))
            .collect();
        tree.push(Node {
            pid: None,
            name: UNSUPERVISED.to_owned(),
            kind: Kind::Group,
            policy: None,
            restart: None,
            children: fold(workers),
            count,
        });
    }
    tree
}

/// Names processes (a dead one has none: it is left out).
struct Names<'a> {
    registry: &'a ProcessRegistry,
}

impl Names<'_> {
    fn of(&mut self, pid: Pid) -> Option<String> {
        self.registry.name(pid)
    }
}

fn worker(pid: Pid, name: String, restart: Option<Restart>) -> Node {
    Node {
        pid: Some(pid),
        name,
        kind: Kind::Worker,
        policy: None,
        restart,
        children: Vec::new(),
        count: 1,
    }
}

fn supervisor_node(
    pid: Pid,
    restart: Option<Restart>,
    supervisors: &HashMap<Pid, (Policy, Vec<SupervisedChild>)>,
    names: &mut Names<'_>,
    visited: &mut HashSet<Pid>,
) -> Option<Node> {
    let name = names.of(pid)?;
    let (policy, children) = supervisors.get(&pid)?;
    // A supervisor listed twice (a view caught mid-restart) is drawn once.
    if !visited.insert(pid) {
        return None;
    }
    let mut nodes = Vec::with_capacity(children.len().min(1024));
    for child in children {
        let node = if supervisors.contains_key(&child.pid) {
            supervisor_node(child.pid, Some(child.restart), supervisors, names, visited)
        } else {
            names
                .of(child.pid)
                .map(|name| worker(child.pid, name, Some(child.restart)))
        };
        nodes.extend(node);
    }
    let count = 1 + nodes.iter().map(|node| node.count).sum::<usize>();
    Some(Node {
        pid: Some(pid),
        name,
        kind: Kind::Supervisor,
        policy: Some(*policy),
        restart,
        children: fold(nodes),
        count,
    })
}

/// Folds uniform sibling workers (one name, one restart type, at least
/// [`FOLD_AT`]) into one node at the first one's place, and caps the list
/// at [`MAX_CHILDREN`] with an "other processes" group.
fn fold(nodes: Vec<Node>) -> Vec<Node> {
    let mut sizes: HashMap<(String, Option<Restart>), usize> = HashMap::new();
    for node in nodes.iter().filter(|node| node.kind == Kind::Worker) {
        *sizes.entry((node.name.clone(), node.restart)).or_default() += 1;
    }
    let mut folded: Vec<Node> = Vec::new();
    let mut placed: HashMap<(String, Option<Restart>), usize> = HashMap::new();
    for node in nodes {
        let key = (node.name.clone(), node.restart);
        let size = sizes.get(&key).copied().unwrap_or(1);
        if node.kind != Kind::Worker || size < FOLD_AT {
            folded.push(node);
            continue;
        }
        match placed.get(&key) {
            Some(at) => folded[*at].count += 1,
            None => {
                placed.insert(key, folded.len());
                folded.push(node);
            }
        }
    }
    if folded.len() > MAX_CHILDREN {
        let rest = folded.split_off(MAX_CHILDREN - 1);
        let count = rest.iter().map(|node| node.count).sum();
        folded.push(Node {
            pid: None,
            name: OTHERS.to_owned(),
            kind: Kind::Group,
            policy: None,
            restart: None,
            children: Vec::new(),
            count,
        });
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(pid: u64, name: &str) -> Node {
        worker(Pid(pid), name.to_owned(), Some(Restart::Transient))
    }

    #[test]
    fn uniform_siblings_fold_at_the_first_ones_place() {
        let mut nodes = vec![leaf(1, "a")];
        nodes.extend((2..12).map(|pid| leaf(pid, "w")));
        nodes.push(leaf(12, "b"));
        let folded = fold(nodes);
        let shown: Vec<(&str, usize)> = folded
            .iter()
            .map(|node| (node.name.as_str(), node.count))
            .collect();
        assert_eq!(shown, [("a", 1), ("w", 10), ("b", 1)]);
        assert_eq!(folded[1].pid, Some(Pid(2)));
    }

    #[test]
    fn a_few_siblings_stay_apart_and_many_kinds_are_capped() {
        let few: Vec<Node> = (1..FOLD_AT as u64).map(|pid| leaf(pid, "w")).collect();
        assert_eq!(fold(few).len(), FOLD_AT - 1);
        let many: Vec<Node> = (0..100u64)
            .map(|pid| leaf(pid, &format!("k{pid}")))
            .collect();
        let capped = fold(many);
        assert_eq!(capped.len(), MAX_CHILDREN);
        let last = capped.last().expect("the group");
        assert_eq!(
            (last.kind, last.count),
            (Kind::Group, 100 - MAX_CHILDREN + 1)
        );
    }
}
