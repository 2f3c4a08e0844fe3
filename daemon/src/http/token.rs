//! The access token: a random secret made at start when the daemon is told
//! to require one (`--access-token`), kept in the home (mode 0600) for
//! `system status` to show, and checked on every HTTP request.
//!
//! It makes, stores, reads and compares the secret; which requests must
//! carry it is `guard`'s business.

use std::fs;
use std::io::{self, Read};

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::os::home::Home;

/// The secret, as the hex text a URL fragment or a header carries.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// 256 random bits from a cryptographically secure generator (rand's
    /// `ThreadRng`, seeded by the operating system).
    fn generate() -> Token {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Makes a new token and writes it to the home's token file, which
    /// must not exist (any old one is removed first; a link is never
    /// followed): created 0600, exclusively.
    pub fn create(home: &Home) -> io::Result<Token> {
        let token = Token::generate();
        crate::os::home::write_new(&home.token_file(), token.0.as_bytes(), 0o600)?;
        Ok(token)
    }

    /// The token a dead daemon left in the home (for the daemon heart
    /// restarts in its place).
    pub fn kept(home: &Home) -> Option<Token> {
        read(home).map(Token)
    }

    /// True if `candidate` is this token (compared in constant time).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The running daemon's token, if it requires one (for `system status`).
pub fn read(home: &Home) -> Option<String> {
    let file = crate::os::home::open_read(&home.token_file()).ok()?;
    let mut text = String::new();
    file.take(128).read_to_string(&mut text).ok()?;
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Removes the token file (at start, and when the daemon stops).
pub fn remove(home: &Home) {
    let _ = fs::remove_file(home.token_file());
}
