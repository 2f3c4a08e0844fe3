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
//! pool, one at a time with the pages of `processes`), never [`build`] on
//! a scheduler. It knows nothing of how a tree
//! is shown (the host draws it as text or JSON).

use std::borrow::Cow;
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

/// The tree now, read in the background, never on a scheduler; at most
/// [`CONCURRENT_READS`](crate::processes::CONCURRENT_READS)
/// (processes' and trees' together) at once.
pub async fn tree(registry: &Arc<ProcessRegistry>) -> Vec<Node> {
    let Ok(_permit) = crate::processes::read_permit().await else {
        return Vec::new();
    };
    let registry = registry.clone();
    crate::background::run("tree", move || build(&registry))
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
    let mut walk = Walk {
        registry,
        supervisors: &supervisors,
        names: Names::default(),
        visited: HashSet::new(),
    };
    let mut tree: Vec<Node> = roots
        .iter()
        .filter_map(|root| walk.supervisor(*root, None))
        .collect();
    let mut loose = Vec::new();
    registry.for_each_entry(|entry| {
        let pid = entry.pid;
        if supervised.binary_search(&pid.0).is_err() && !supervisors.contains_key(&pid) {
            loose.push(Item::Leaf(Leaf {
                pid,
                name: walk.names.number(&entry.spec.name),
                restart: None,
            }));
        }
    });
    if !loose.is_empty() {
        loose.sort_unstable_by_key(Item::pid);
        let count = loose.len();
        tree.push(Node {
            pid: None,
            name: UNSUPERVISED.to_owned(),
            kind: Kind::Group,
            policy: None,
            restart: None,
            children: fold(loose, &walk.names),
            count,
        });
    }
    tree
}

/// The names met in one build, each numbered once (a node has a few kinds
/// of process; a leaf holds the number, not a copy of the name).
#[derive(Default)]
struct Names {
    numbers: HashMap<Cow<'static, str>, u32>,
    names: Vec<Cow<'static, str>>,
    /// The last name numbered (siblings mostly share one): its text's
    /// address and length, and its number.
    last: Option<(usize, usize, u32)>,
}

impl Names {
    // A `Cow`, not a `&str`: keeping a borrowed `'static` name copies no text.
    #[allow(clippy::ptr_arg)]
    fn number(&mut self, name: &Cow<'static, str>) -> u32 {
        let at = (name.as_ptr() as usize, name.len());
        // The address alone could be a freed name's, reused by another of
        // the same length: the text is compared too (a short memcmp).
        if let Some((address, len, number)) = self.last
            && (address, len) == at
            && self.names[number as usize] == *name
        {
            return number;
        }
        let number = self.lookup(name);
        self.last = Some((at.0, at.1, number));
        number
    }

    // A `Cow`, not a `&str`: keeping a borrowed `'static` name copies no text.
    #[allow(clippy::ptr_arg)]
    fn lookup(&mut self, name: &Cow<'static, str>) -> u32 {
        if let Some(number) = self.numbers.get(name) {
            return *number;
        }
        let number = self.names.len() as u32;
        self.names.push(name.clone());
        self.numbers.insert(name.clone(), number);
        number
    }

    fn name(&self, number: u32) -> String {
        self.names
            .get(number as usize)
            .map(|name| name.to_string())
            .unwrap_or_default()
    }
}

/// A worker before folding: 16 bytes, so a million of them stay small.
#[derive(Clone, Copy)]
struct Leaf {
    pid: Pid,
    name: u32,
    restart: Option<Restart>,
}

/// A child before folding: a supervisor's subtree, or a worker.
enum Item {
    Supervisor(Box<Node>),
    Leaf(Leaf),
}

impl Item {
    fn pid(&self) -> Option<Pid> {
        match self {
            Item::Supervisor(node) => node.pid,
            Item::Leaf(leaf) => Some(leaf.pid),
        }
    }
}

struct Walk<'a> {
    registry: &'a ProcessRegistry,
    supervisors: &'a HashMap<Pid, (Policy, Vec<SupervisedChild>)>,
    names: Names,
    visited: HashSet<Pid>,
}

impl Walk<'_> {
    fn supervisor(&mut self, pid: Pid, restart: Option<Restart>) -> Option<Node> {
        let name = self
            .registry
            .with_entry(pid, |entry| entry.spec.name.to_string())?;
        let supervisors = self.supervisors;
        let (policy, children) = supervisors.get(&pid)?;
        // A supervisor listed twice (a view caught mid-restart) is drawn once.
        if !self.visited.insert(pid) {
            return None;
        }
        let mut items = Vec::with_capacity(children.len());
        for child in children {
            if supervisors.contains_key(&child.pid) {
                if let Some(node) = self.supervisor(child.pid, Some(child.restart)) {
                    items.push(Item::Supervisor(Box::new(node)));
                }
            } else {
                let names = &mut self.names;
                let name = self
                    .registry
                    .with_entry(child.pid, |entry| names.number(&entry.spec.name));
                if let Some(name) = name {
                    items.push(Item::Leaf(Leaf {
                        pid: child.pid,
                        name,
                        restart: Some(child.restart),
                    }));
                }
            }
        }
        let count = 1 + items
            .iter()
            .map(|item| match item {
                Item::Supervisor(node) => node.count,
                Item::Leaf(_) => 1,
            })
            .sum::<usize>();
        Some(Node {
            pid: Some(pid),
            name,
            kind: Kind::Supervisor,
            policy: Some(*policy),
            restart,
            children: fold(items, &self.names),
            count,
        })
    }
}

/// Folds uniform sibling workers (one name, one restart type, at least
/// [`FOLD_AT`]) into one node at the first one's place, and caps the list
/// at [`MAX_CHILDREN`] with an "other processes" group.
fn fold(items: Vec<Item>, names: &Names) -> Vec<Node> {
    // One slot per (name, restart type): how many, and where the fold is.
    let group = |leaf: &Leaf| {
        let restart = match leaf.restart {
            None => 0,
            Some(Restart::Permanent) => 1,
            Some(Restart::Transient) => 2,
            Some(Restart::Temporary) => 3,
        };
        leaf.name as usize * 4 + restart
    };
    let mut sizes = vec![0usize; names.names.len() * 4];
    for item in &items {
        if let Item::Leaf(leaf) = item {
            sizes[group(leaf)] += 1;
        }
    }
    let mut placed: Vec<Option<usize>> = vec![None; sizes.len()];
    let mut folded: Vec<Node> = Vec::new();
    for item in items {
        let leaf = match item {
            Item::Supervisor(node) => {
                folded.push(*node);
                continue;
            }
            Item::Leaf(leaf) => leaf,
        };
        let slot = group(&leaf);
        if sizes[slot] >= FOLD_AT {
            if let Some(at) = placed[slot] {
                folded[at].count += 1;
                continue;
            }
            placed[slot] = Some(folded.len());
        }
        folded.push(worker(leaf.pid, names.name(leaf.name), leaf.restart));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(names: &mut Names, kinds: &[&str]) -> Vec<Item> {
        kinds
            .iter()
            .enumerate()
            .map(|(pid, name)| {
                Item::Leaf(Leaf {
                    pid: Pid(pid as u64 + 1),
                    name: names.number(&Cow::Owned(name.to_string())),
                    restart: Some(Restart::Transient),
                })
            })
            .collect()
    }

    #[test]
    fn uniform_siblings_fold_at_the_first_ones_place() {
        let mut names = Names::default();
        let mut kinds = vec!["a"];
        kinds.extend(["w"; 10]);
        kinds.push("b");
        let folded = fold(leaves(&mut names, &kinds), &names);
        let shown: Vec<(&str, usize)> = folded
            .iter()
            .map(|node| (node.name.as_str(), node.count))
            .collect();
        assert_eq!(shown, [("a", 1), ("w", 10), ("b", 1)]);
        assert_eq!(folded[1].pid, Some(Pid(2)));
    }

    #[test]
    fn a_few_siblings_stay_apart_and_many_kinds_are_capped() {
        let mut names = Names::default();
        let few = leaves(&mut names, &["w"; FOLD_AT - 1]);
        assert_eq!(fold(few, &names).len(), FOLD_AT - 1);
        // Owned names, each freed after it is numbered: an address reused
        // by the next one must not give it the last one's number.
        let owned: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let kinds: Vec<&str> = owned.iter().map(String::as_str).collect();
        let capped = fold(leaves(&mut names, &kinds), &names);
        assert_eq!(capped.len(), MAX_CHILDREN);
        let last = capped.last().expect("the group");
        assert_eq!(
            (last.kind, last.count),
            (Kind::Group, 100 - MAX_CHILDREN + 1)
        );
    }
}
