//! `Runtime.tree()` as the console prints it: the runtime's supervision
//! tree drawn as indented text, one line a node (a supervisor with its
//! strategy and intensity, a child with its restart type, a folded branch
//! as `load_worker × 10,000`).
//!
//! Pure formatting: it must not walk the registry (the runtime's `tree`
//! does) or reach the node.

use system_runtime::supervision::Policy;
use system_runtime::tree::{Kind, Node};

/// What `Runtime.tree()` returns: printed as its text, not as a string.
#[derive(Clone, Debug)]
pub struct TreeText(pub String);

/// The tree, one line per node, children indented under their parent.
pub fn draw(roots: &[Node]) -> TreeText {
    let mut lines = Vec::new();
    for root in roots {
        lines.push(label(root));
        draw_children(&root.children, "", &mut lines);
    }
    if lines.is_empty() {
        lines.push("(no processes)".to_owned());
    }
    TreeText(lines.join("\n"))
}

fn draw_children(children: &[Node], indent: &str, lines: &mut Vec<String>) {
    for (index, child) in children.iter().enumerate() {
        let last = index + 1 == children.len();
        let (branch, below) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        lines.push(format!("{indent}{branch}{}", label(child)));
        draw_children(&child.children, &format!("{indent}{below}"), lines);
    }
}

/// One node's line: `#PID<0.104.0> load_supervisor  permanent  one_for_one, no restart limit`.
fn label(node: &Node) -> String {
    let mut text = match node.kind {
        Kind::Group => format!("{} ({})", node.name, processes(node.count)),
        _ if node.is_folded() => format!(
            "{} × {}  (first {})",
            node.name,
            thousands(node.count),
            node.pid.map(|pid| pid.to_string()).unwrap_or_default()
        ),
        _ => format!(
            "{} {}",
            node.pid.map(|pid| pid.to_string()).unwrap_or_default(),
            node.name
        ),
    };
    if let Some(restart) = node.restart {
        text.push_str("  ");
        text.push_str(restart.as_str());
    }
    if let Some(policy) = node.policy {
        text.push_str("  ");
        text.push_str(&policy_text(policy));
    }
    text
}

fn policy_text(policy: Policy) -> String {
    match policy.intensity {
        Some(intensity) => format!(
            "{}, at most {} restarts in {}",
            policy.strategy.as_str(),
            intensity.max_restarts,
            humantime::format_duration(intensity.within)
        ),
        None => format!("{}, no restart limit", policy.strategy.as_str()),
    }
}

fn processes(count: usize) -> String {
    match count {
        1 => "1 process".to_owned(),
        n => format!("{} processes", thousands(n)),
    }
}

/// `1000000` as `1,000,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345), "12,345");
    }
}
