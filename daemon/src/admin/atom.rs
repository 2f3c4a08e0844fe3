//! Atoms in the console, as the talk types them: `:name` where an
//! expression may start reads as the string `"name"`, so
//! `Process.info(pid, :current_stacktrace)` and `Process.kill(pid, :kill)`
//! work as written.
//!
//! The rule lives in Rhai's own tokenizer, not in a rewrite of the text:
//! strings, comments and interpolations are already tokens there, `::` is
//! its own token, and a `:` that follows an operand (the `a: 1` of a map
//! `#{a: 1}`) is left alone. A `:` that follows a token after which an
//! operand must come (`(`, `,`, `=`, an operator, `:`, `=>`, the start of
//! the script, …) becomes the atom syntax's keyword; the name after it is
//! the atom. It must not evaluate anything: an atom is a constant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rhai::{Dynamic, Engine, ImmutableString, LexError, Token};

/// The keyword a `:` in operand position becomes (a token no script can write).
const ATOM: &str = ":";

/// Switches an engine's tokenizer to the atom rule; [`Atoms::reset`] must be
/// called before each compilation (a script that failed to parse may have
/// left the tokenizer mid-way).
#[derive(Clone)]
pub struct Atoms {
    /// True when the next token starts an operand.
    operand_next: Arc<AtomicBool>,
}

impl Atoms {
    pub fn install(engine: &mut Engine) -> Atoms {
        let atoms = Atoms {
            operand_next: Arc::new(AtomicBool::new(true)),
        };
        let operand_next = atoms.operand_next.clone();
        #[allow(deprecated)] // "volatile", not deprecated: the only hook into the tokenizer
        engine.on_parse_token(move |token, _, _| {
            let in_operand_position = operand_next.swap(operand_follows(&token), Relaxed);
            if in_operand_position && token == Token::Colon {
                operand_next.store(false, Relaxed);
                Token::Custom(Box::new(ATOM.into()))
            } else {
                token
            }
        });
        engine.register_custom_syntax_with_state_raw(
            ATOM,
            |symbols, look_ahead, _| match symbols.len() {
                1 if is_name(look_ahead) => Ok(Some("$token$".into())),
                1 => Err(LexError::ImproperSymbol(
                    look_ahead.to_owned(),
                    format!(
                        "an atom is `:` and a name, e.g. `:kill`; not `:{look_ahead}` \
                         (a `:` outside a map starts an atom)"
                    ),
                )
                .into_err(rhai::Position::NONE)),
                _ => Ok(None),
            },
            false,
            |_, inputs, _| {
                let name = inputs
                    .first()
                    .and_then(|input| input.get_string_value())
                    .unwrap_or_default();
                Ok(Dynamic::from(ImmutableString::from(name)))
            },
        );
        atoms
    }

    /// The start of a script: an operand may come first.
    pub fn reset(&self) {
        self.operand_next.store(true, Relaxed);
    }
}

/// True if an operand (not an operator) comes after `token`: Rhai's own
/// rule for a unary `-`, plus the end of a script (the next one starts) and
/// `=>` (a `switch` arm's value).
fn operand_follows(token: &Token) -> bool {
    token.is_next_unary() || matches!(token, Token::EOF | Token::DoubleArrow)
}

/// A name an atom may have: letters, digits and `_`, not starting with a digit.
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::{Map, Scope};

    fn eval(script: &str) -> Result<Dynamic, String> {
        let mut engine = Engine::new();
        let atoms = Atoms::install(&mut engine);
        atoms.reset();
        engine
            .eval_with_scope::<Dynamic>(&mut Scope::new(), script)
            .map_err(|error| error.to_string())
    }

    fn string(script: &str) -> String {
        match eval(script) {
            Ok(value) => value.to_string(),
            Err(error) => panic!("{script}: {error}"),
        }
    }

    #[test]
    fn a_colon_name_in_operand_position_is_an_atom() {
        assert_eq!(string(":kill"), "kill");
        assert_eq!(
            string("fn f(a, b) { b } f(1, :current_stacktrace)"),
            "current_stacktrace"
        );
        assert_eq!(string("let x = :normal; x"), "normal");
        assert_eq!(string("[:a, :b][1]"), "b");
        assert_eq!(string(":a + \"!\""), "a!");
        assert_eq!(string("if :a == \"a\" { :yes } else { :no }"), "yes");
        assert_eq!(string("switch 1 { 1 => :one, _ => :other }"), "one");
        assert_eq!(string("(:_private_1)"), "_private_1");
        assert_eq!(string("fn f() { :inside } f()"), "inside");
        assert_eq!(string("`atom ${:interpolated}`"), "atom interpolated");
        // Keywords are names too.
        assert_eq!(string(":exit"), "exit");
        assert_eq!(string(":true"), "true");
    }

    #[test]
    fn strings_comments_maps_and_paths_keep_their_meaning() {
        assert_eq!(string("\"keep :this\""), "keep :this");
        assert_eq!(string("`raw :text ${1 + 1} :more`"), "raw :text 2 :more");
        assert_eq!(string("'x' + \":y\""), "x:y");
        assert_eq!(string("// a comment with :kill\n:ok"), "ok");
        assert_eq!(string("/* :block */ :ok"), "ok");
        let map = eval("let b = 2; #{a: 1, c:b, \"d\": :e, f: :g}")
            .expect("a map")
            .cast::<Map>();
        assert_eq!(map["a"].as_int(), Ok(1));
        assert_eq!(map["c"].as_int(), Ok(2));
        assert_eq!(map["d"].to_string(), "e");
        assert_eq!(map["f"].to_string(), "g");
        // `::` is a path separator, not an atom.
        let path = eval("global::x").expect_err("no such module variable");
        assert!(!path.contains("atom"), "{path}");
        let mut engine = Engine::new();
        Atoms::install(&mut engine).reset();
        let mut module = rhai::Module::new();
        module.set_var("answer", 42_i64);
        engine.register_static_module("m", module.into());
        assert_eq!(engine.eval::<i64>("m::answer").ok(), Some(42));
    }

    #[test]
    fn a_colon_without_a_name_is_a_clear_syntax_error() {
        let error = eval("Process.info(1, :)").expect_err("no name");
        assert!(error.contains("an atom is `:` and a name"), "{error}");
        let error = eval(":1").expect_err("no name");
        assert!(error.contains("an atom is"), "{error}");
        // After a failed parse the next script starts afresh.
        let mut engine = Engine::new();
        let atoms = Atoms::install(&mut engine);
        atoms.reset();
        assert!(engine.compile("foo(1, ").is_err());
        atoms.reset();
        assert_eq!(
            engine.eval::<ImmutableString>(":fresh").ok().as_deref(),
            Some("fresh")
        );
    }
}
