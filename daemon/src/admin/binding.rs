//! IEx-style binding at the console's top level: `pid = hd(Runtime.top()).pid`
//! binds `pid` when no variable of that name exists yet, as `let` would.
//!
//! Only the top-level statements of a console line count; inside blocks,
//! loops and functions Rhai's own rule (assign only to a declared variable)
//! stays. A line that ends in such an assignment shows the value bound.
//! This module finds the names; the session binds them (to `()`, just
//! before the line runs). It must not change the script's text.

use std::collections::HashSet;

use rhai::{AST, Expr, ImmutableString, Scope, Stmt};

/// `ast` must be compiled without optimization (the optimizer flattens
/// blocks into the top level).
///
/// The variables that `ast`'s top-level plain assignments (`name = …`, not
/// `+=`) name but that neither `scope` nor an earlier top-level `let` or
/// `const` of the same line declares, in order, each once.
pub fn unbound_targets(ast: &AST, scope: &Scope) -> Vec<ImmutableString> {
    let mut declared: HashSet<&str> = HashSet::new();
    let mut targets: Vec<ImmutableString> = Vec::new();
    for statement in ast.statements() {
        match statement {
            Stmt::Var(definition, ..) => {
                declared.insert(definition.0.name.as_str());
            }
            Stmt::Assignment(assignment) => {
                let (operator, binary) = &**assignment;
                if operator.is_op_assignment() {
                    continue;
                }
                let Expr::Variable(variable, ..) = &binary.lhs else {
                    continue;
                };
                let (_, name, namespace, _) = &**variable;
                if namespace.is_empty()
                    && !scope.contains(name)
                    && !declared.contains(name.as_str())
                    && !targets.contains(name)
                {
                    targets.push(name.clone());
                }
            }
            _ => {}
        }
    }
    targets
}

/// The variable the line's last top-level statement assigns with `name = …`:
/// the line shows its value, as IEx shows a match's (Rhai's assignment is `()`).
pub fn last_assigned(ast: &AST) -> Option<ImmutableString> {
    let Some(Stmt::Assignment(assignment)) = ast.statements().last() else {
        return None;
    };
    let (operator, binary) = &**assignment;
    match &binary.lhs {
        Expr::Variable(variable, ..) if !operator.is_op_assignment() && variable.2.is_empty() => {
            Some(variable.1.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::{Engine, OptimizationLevel};

    fn targets(script: &str, scope: &Scope) -> Vec<String> {
        let mut engine = Engine::new();
        engine.set_optimization_level(OptimizationLevel::None);
        let ast = engine
            .compile_with_scope(scope, script)
            .expect("the script compiles");
        unbound_targets(&ast, scope)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn top_level_assignments_to_new_names_bind() {
        let mut scope = Scope::new();
        scope.push("known", 1_i64);
        assert_eq!(targets("pid = 1", &scope), ["pid"]);
        assert_eq!(targets("a = 1; b = a + 1; a = 3", &scope), ["a", "b"]);
        assert_eq!(targets("known = 2", &scope), Vec::<String>::new());
        assert_eq!(targets("let c = 1; c = 2", &scope), Vec::<String>::new());
        assert_eq!(targets("x += 1", &scope), Vec::<String>::new());
        assert_eq!(targets("m.x = 1", &scope), Vec::<String>::new());
        assert_eq!(targets("a == 1", &scope), Vec::<String>::new());
    }

    #[test]
    fn a_line_ending_in_an_assignment_shows_the_variable() {
        let mut engine = Engine::new();
        engine.set_optimization_level(OptimizationLevel::None);
        let shown = |script: &str| {
            let ast = engine.compile(script).expect("the script compiles");
            last_assigned(&ast).map(|name| name.to_string())
        };
        assert_eq!(shown("pid = 1").as_deref(), Some("pid"));
        assert_eq!(shown("a = 1; b = 2").as_deref(), Some("b"));
        assert_eq!(shown("a = 1; a + 1"), None);
        assert_eq!(shown("a += 1"), None);
        assert_eq!(shown("let a = 1"), None);
    }

    #[test]
    fn assignments_inside_blocks_and_functions_keep_rhai_rules() {
        let scope = Scope::new();
        assert_eq!(targets("{ inner = 1 }", &scope), Vec::<String>::new());
        assert_eq!(
            targets("if true { inner = 1 }", &scope),
            Vec::<String>::new()
        );
        assert_eq!(targets("fn f() { inner = 1 } outer = 2", &scope), ["outer"]);
        assert_eq!(
            targets("for i in 0..3 { inner = i }", &scope),
            Vec::<String>::new()
        );
    }
}
