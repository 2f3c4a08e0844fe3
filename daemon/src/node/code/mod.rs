//! The code server: loads versions of the math plugin (a cdylib speaking the
//! `plugin-abi` C ABI) and hands out budgeted sum computations, so the code
//! can be upgraded while old computations keep running on the old version —
//! the Rust stand-in for the BEAM's hot code loading.
//!
//! Each load copies the library to a new versioned file name (`copies`:
//! dlopen caches by path), has it checked in a child process (`check`: ABI,
//! symbols, self-test, yield and memory check) before opening it here, and only then
//! makes it current. It must never unload a library while a computation
//! still holds it (`Arc<PluginVersion>` keeps the `Library` alive; the server
//! keeps only weak references to old versions), never let a failed load
//! change anything, and never decide *when* a computation runs — that is the
//! scheduler's job.
//!
//! Modules: `version` is a loaded version and its FFI (all of the code
//! server's `unsafe`, with its contract in a `# Safety` section);
//! `computation` runs a sum in slices and says what each slice did;
//! `self_test` is what a new version must compute right; `check` runs the
//! checks in a child process, which `contain` confines with a seccomp
//! filter; `copies` owns the versioned files; `unload`
//! closes old versions on its own thread, never on a scheduler.

pub mod check;
mod computation;
mod contain;
mod copies;
mod self_test;
mod unload;
mod version;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::lock;
use crate::os::kept::{KeptPlugins, KeptVersion};

use sha2::{Digest, Sha256};

pub use computation::{SLICE_BUDGET, SumComputation, SumStep};
pub(crate) use self_test::self_test;
pub use unload::Unloader;
pub use version::PluginVersion;

/// Why a plugin version could not be loaded. Nothing changes when a load fails.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("plugin file {} does not exist", path.display())]
    MissingFile { path: PathBuf },
    #[error("cannot read plugin file {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot write the versioned copy {}: {source}", path.display())]
    Copy { path: PathBuf, source: io::Error },
    #[error("{} is not a loadable library: {source}", path.display())]
    NotALibrary {
        path: PathBuf,
        source: libloading::Error,
    },
    #[error("{} does not export the symbol `{symbol}`: {source}", path.display())]
    MissingSymbol {
        path: PathBuf,
        symbol: &'static str,
        source: libloading::Error,
    },
    #[error("{} speaks plugin ABI version {found}, this daemon speaks version {expected}", path.display())]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{} reports an unusable version string: {reason}", path.display())]
    BadVersionString { path: PathBuf, reason: String },
    #[error("{} failed its self-test: {reason}", path.display())]
    SelfTest { path: PathBuf, reason: String },
    #[error("{} failed the yield check: {reason}", path.display())]
    YieldCheck { path: PathBuf, reason: String },
    #[error("{} failed the memory check: {reason}", path.display())]
    MemoryCheck { path: PathBuf, reason: String },
    /// The check process ended without a verdict (signal, deadline, exit status).
    #[error("{} was refused: {reason}", path.display())]
    Check { path: PathBuf, reason: String },
    /// The check process refused the library; `message` is its reason.
    #[error("{message}")]
    Refused { kind: String, message: String },
    #[error("there is no previous version to roll back to")]
    NoPrevious,
}

impl CodeError {
    /// A short name for why a load failed, for clients that act on it.
    pub fn kind(&self) -> &str {
        match self {
            CodeError::MissingFile { .. } => "missing_file",
            CodeError::Unreadable { .. } => "unreadable",
            CodeError::Copy { .. } => "copy",
            CodeError::NotALibrary { .. } => "not_a_library",
            CodeError::MissingSymbol { .. } => "missing_symbol",
            CodeError::AbiMismatch { .. } => "abi_mismatch",
            CodeError::BadVersionString { .. } => "bad_version",
            CodeError::SelfTest { .. } => "self_test",
            CodeError::YieldCheck { .. } => "yield",
            CodeError::MemoryCheck { .. } => "memory",
            CodeError::Check { .. } => "check",
            CodeError::Refused { kind, .. } => kind,
            CodeError::NoPrevious => "no_previous",
        }
    }
}

/// Where a candidate library is checked before it is opened in the daemon.
#[derive(Clone, Debug)]
pub enum Check {
    /// In a child process (the daemon): a crash or hang there costs nothing.
    Child(check::ChildCheck),
    /// In this process (unit tests of trusted builds only): the self-test
    /// runs after opening; a faulty library can take the process down.
    InProcess,
}

/// Loads plugin versions and knows which one is current.
pub struct CodeServer {
    /// Where versioned copies of the libraries go.
    dir: PathBuf,
    /// The current and previous versions, kept for a restarted daemon.
    kept: KeptPlugins,
    /// How candidates are checked before they load.
    check: Check,
    /// Serialises loads, so versions become current in load order and each
    /// [`Switch`] names the version it really replaced.
    loading: Mutex<()>,
    state: Mutex<Loaded>,
    /// Closes old versions on its own thread, never on a scheduler.
    unloader: Unloader,
}

/// A version made current, and the one it replaced.
#[derive(Debug)]
pub struct Switch {
    /// The version replaced, e.g. `v1 (1.0.0)`; `None` if none was loaded.
    pub replaced: Option<String>,
    /// The new current version.
    pub current: Arc<PluginVersion>,
}

/// What the server holds: the current version strongly, every other one weakly.
#[derive(Default)]
struct Loaded {
    current: Option<Arc<PluginVersion>>,
    versions: Vec<Weak<PluginVersion>>,
    /// Successful loads so far; the next version gets `loaded + 1` as its id.
    loaded: u32,
    /// The bytes of the last two successful loads (previous, current), so a
    /// rollback works even after the previous library was unloaded and its
    /// source file rebuilt.
    recent: Vec<(PathBuf, Arc<[u8]>)>,
}

/// One loaded version, as shown by [`CodeServer::versions`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    pub id: u32,
    pub version: String,
    pub path: PathBuf,
    pub sha256: String,
    pub current: bool,
    /// Live computations running on this version.
    pub computations: usize,
}

impl CodeServer {
    /// A server with no version loaded; versioned copies go to `dir`
    /// (created on first load); candidates are checked as `check` says.
    /// Versioned copies a dead daemon left in `dir` are removed; the
    /// versions kept for restarts (`dir/kept`) stay.
    pub fn new(dir: PathBuf, check: Check) -> Self {
        copies::remove_stale(&dir);
        CodeServer {
            kept: KeptPlugins::new(dir.join("kept")),
            dir,
            check,
            loading: Mutex::new(()),
            state: Mutex::new(Loaded::default()),
            unloader: Unloader::start(),
        }
    }

    /// The versions kept in the home across restarts.
    pub fn kept(&self) -> &KeptPlugins {
        &self.kept
    }

    /// Loads the library at `path` as a new version and makes it current,
    /// once it has passed the ABI, symbol and self-test checks.
    pub fn load(&self, path: &Path) -> Result<Arc<PluginVersion>, CodeError> {
        self.switch_to(path).map(|switch| switch.current)
    }

    /// [`CodeServer::load`], also naming the version it replaced.
    pub fn switch_to(&self, path: &Path) -> Result<Switch, CodeError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => CodeError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => CodeError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let loading = lock(&self.loading);
        self.load_bytes(&loading, path, bytes.into(), false)
    }

    /// Loads a kept version again under its own id (a daemon restarted by heart).
    pub fn restore(&self, kept: &KeptVersion) -> Result<Arc<PluginVersion>, CodeError> {
        lock(&self.state).loaded = kept.id - 1;
        let result = self.load(&self.kept.path(kept));
        let last_id = self.kept.read().last_id;
        let mut state = lock(&self.state);
        state.loaded = state.loaded.max(last_id);
        result
    }

    /// Loads again the version that was current before the current one
    /// (its bytes passed the check when they were first loaded).
    pub fn rollback(&self) -> Result<Arc<PluginVersion>, CodeError> {
        self.switch_back().map(|switch| switch.current)
    }

    /// [`CodeServer::rollback`], also naming the version it replaced.
    pub fn switch_back(&self) -> Result<Switch, CodeError> {
        // Held from reading "previous" on, so that a load in between cannot
        // make it stale.
        let loading = lock(&self.loading);
        let previous = {
            let state = lock(&self.state);
            let count = state.recent.len();
            (count >= 2).then(|| state.recent[count - 2].clone())
        };
        let (path, bytes) = previous.ok_or(CodeError::NoPrevious)?;
        self.load_bytes(&loading, &path, bytes, true)
    }

    /// `checked`: these bytes already passed the check in this daemon.
    /// `_loading` is the held load lock: one load at a time.
    fn load_bytes(
        &self,
        _loading: &MutexGuard<'_, ()>,
        path: &Path,
        bytes: Arc<[u8]>,
        checked: bool,
    ) -> Result<Switch, CodeError> {
        let sha256 = hex(&Sha256::digest(&bytes));
        let id = lock(&self.state).loaded + 1;
        let versioned = copies::path(&self.dir, id, &sha256);
        copies::write(&self.dir, &versioned, &bytes)?;

        // Nothing of the library runs in the daemon before it passed here.
        if let (Check::Child(child), false) = (&self.check, checked) {
            match child.run(&versioned, path) {
                Ok(slices) => tracing::info!(
                    path = %path.display(),
                    "plugin check passed in a child process; yield check slices: {}",
                    check::describe(&slices)
                ),
                Err(error) => {
                    copies::remove(&versioned);
                    return Err(error);
                }
            }
        }
        let unloader = Some(self.unloader.clone());
        let version = match PluginVersion::open(id, path, versioned.clone(), sha256, unloader) {
            Ok(version) => Arc::new(version),
            Err(error) => {
                copies::remove(&versioned);
                return Err(error);
            }
        };
        if matches!(self.check, Check::InProcess)
            && let Err(reason) = self_test(&version)
        {
            // Unloaded and its copy removed before the next load may reuse its name.
            drop(version);
            self.unloader.settle();
            return Err(CodeError::SelfTest {
                path: path.to_path_buf(),
                reason,
            });
        }

        let old = {
            let mut state = lock(&self.state);
            state.loaded = id;
            state.versions.retain(|weak| weak.strong_count() > 0);
            state.versions.push(Arc::downgrade(&version));
            state.recent.push((path.to_path_buf(), bytes));
            if state.recent.len() > 2 {
                state.recent.remove(0);
            }
            state.current.replace(Arc::clone(&version))
        };
        match &old {
            Some(old) => tracing::info!(
                "code upgrade: math_plugin {old} -> {version}, sha256 {} ({})",
                version.sha256(),
                version.path().display()
            ),
            None => tracing::info!(
                "code loaded: math_plugin {version}, sha256 {} ({})",
                version.sha256(),
                version.path().display()
            ),
        }
        crate::os::fatal::set_code(format!("math_plugin {version}"));
        if let Err(error) = self
            .kept
            .record(version.id(), version.version(), version.path())
        {
            tracing::warn!(
                "cannot keep math_plugin v{} for restarts: {error}",
                version.id()
            );
        }
        // The old version is unloaded (on the unloader's thread) unless
        // computations still hold it.
        let replaced = old.map(|old| old.to_string());
        Ok(Switch {
            replaced,
            current: version,
        })
    }

    /// Waits until every old version whose last holder is gone has been
    /// unloaded and its copy removed.
    pub fn settle(&self) {
        self.unloader.settle();
    }

    /// The handle to the thread that unloads this server's old versions (to
    /// wait for it at exit, once the server itself is gone).
    pub fn unloader(&self) -> Unloader {
        self.unloader.clone()
    }

    /// The version new computations should use, if any was loaded.
    pub fn current(&self) -> Option<Arc<PluginVersion>> {
        lock(&self.state).current.clone()
    }

    /// Every version still loaded (the current one or one still used by a computation), oldest first.
    pub fn versions(&self) -> Vec<VersionInfo> {
        let (current, alive) = {
            let mut state = lock(&self.state);
            state.versions.retain(|weak| weak.strong_count() > 0);
            let alive: Vec<Arc<PluginVersion>> =
                state.versions.iter().filter_map(Weak::upgrade).collect();
            (state.current.clone(), alive)
        };
        // Built outside the lock: if a computation ends meanwhile, the last
        // `Arc` may be one of ours and unloading must not happen under the lock.
        alive
            .iter()
            .map(|version| VersionInfo {
                id: version.id(),
                version: version.version().to_owned(),
                path: version.path().to_path_buf(),
                sha256: version.sha256().to_owned(),
                current: current
                    .as_ref()
                    .is_some_and(|current| Arc::ptr_eq(current, version)),
                computations: version.computations(),
            })
            .collect()
    }
}

impl fmt::Debug for CodeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeServer")
            .field("dir", &self.dir)
            .field("versions", &self.versions())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plugin as built by `cargo build -p math-plugin`.
    fn built_plugin() -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        // `cargo test` builds the dev-dependency's cdylib in `deps/`; only
        // `cargo build` copies it up a level.
        let fresh = target.join("debug/deps/libmath_plugin.so");
        let plugin = if fresh.exists() {
            fresh
        } else {
            target.join("debug/libmath_plugin.so")
        };
        assert!(
            plugin.exists(),
            "{} is missing: build it first with `cargo build -p math-plugin`",
            plugin.display()
        );
        plugin
    }

    /// A fresh directory for one test's versioned copies, removed afterwards.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(test: &str) -> TestDir {
            let dir = std::env::temp_dir()
                .join(format!("system-code-test-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn run_to_end(computation: &mut SumComputation, budget: u64) -> SumStep {
        for _ in 0..100_000 {
            let step = computation.run(budget);
            assert!(step.reductions() <= budget, "overran the budget: {step:?}");
            if !matches!(step, SumStep::Yielded { .. }) {
                return step;
            }
        }
        panic!("the computation did not finish");
    }

    #[test]
    fn loads_the_built_plugin_and_sums_in_slices() {
        let dir = TestDir::new("sums");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        assert!(server.current().is_none());
        let version = server
            .load(&built_plugin())
            .expect("the built plugin loads");
        assert_eq!(version.id(), 1);
        assert_eq!(version.version(), "1.0.0");
        assert_eq!(version.sha256().len(), 64);
        assert!(version.path().starts_with(&dir.0));
        assert!(version.path().exists());
        assert_eq!(version.validate(5), Ok(()));

        let mut computation = version.start_sum(5);
        let first = computation.run(2);
        assert!(
            matches!(first, SumStep::Yielded { reductions: 2, .. }),
            "{first:?}"
        );
        let last = run_to_end(&mut computation, 2);
        assert!(matches!(last, SumStep::Done { result: 15, .. }), "{last:?}");
    }

    #[test]
    fn rollback_returns_to_the_previous_version_even_after_it_was_unloaded() {
        let dir = TestDir::new("rollback");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        assert!(matches!(server.rollback(), Err(CodeError::NoPrevious)));
        let first = server.load(&built_plugin()).expect("v1 loads");
        let first_sha = first.sha256().to_owned();
        drop(first);
        let second = server.load(&built_plugin()).expect("v2 loads");
        assert_eq!(server.versions().len(), 1, "v1 unloaded: nothing ran on it");
        drop(second);
        let back = server.rollback().expect("rollback loads v1's bytes again");
        assert_eq!(back.id(), 3);
        assert_eq!(back.sha256(), first_sha);
        assert_eq!(server.current().map(|v| v.id()), Some(3));
    }

    #[test]
    fn thirteen_crashes_with_error() {
        let dir = TestDir::new("thirteen");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let version = server
            .load(&built_plugin())
            .expect("the built plugin loads");
        let mut computation = version.start_sum(13);
        assert_eq!(
            computation.run(100),
            SumStep::Crashed {
                message: "error".to_string(),
                reductions: 1,
            }
        );
    }

    #[test]
    fn minus_one_yields_with_growing_frame_args() {
        let dir = TestDir::new("minus-one");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let version = server
            .load(&built_plugin())
            .expect("the built plugin loads");
        // The shipped plugin accepts it (DEMO bug 1).
        assert_eq!(version.validate(-1), Ok(()));
        let mut computation = version.start_sum(-1);
        let mut last_from = 0;
        for _ in 0..20 {
            let step = computation.run(1_000);
            let SumStep::Yielded { reductions, frame } = step else {
                panic!("sum(-1) stopped yielding: {step:?}");
            };
            assert_eq!(reductions, 1_000);
            assert!(frame.to_string().starts_with("math_plugin::calc_sum("));
            let &[from, to, _acc] = frame.args() else {
                panic!("unexpected frame {frame}");
            };
            assert_eq!(to, -1);
            assert!(from > last_from, "from did not grow: {frame}");
            last_from = from;
        }
    }

    #[test]
    fn a_non_library_is_refused_and_nothing_changes() {
        let dir = TestDir::new("not-a-library");
        let server = CodeServer::new(dir.0.join("versions"), Check::InProcess);
        let good = server
            .load(&built_plugin())
            .expect("the built plugin loads");
        fs::create_dir_all(&dir.0).expect("test dir");
        let text_file = dir.0.join("notes.so");
        fs::write(&text_file, "not a library").expect("test file");

        let error = server
            .load(&text_file)
            .expect_err("a text file is no library");
        assert!(matches!(error, CodeError::NotALibrary { .. }), "{error:?}");
        assert!(
            error.to_string().contains("is not a loadable library"),
            "{error}"
        );

        let current = server.current().expect("still a current version");
        assert!(Arc::ptr_eq(&current, &good));
        let versions = server.versions();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].id, 1);
        // The failed copy was cleaned up; only the good one remains.
        let copies = fs::read_dir(dir.0.join("versions"))
            .expect("versions dir")
            .flatten()
            .filter(|entry| entry.path().is_file())
            .count();
        assert_eq!(copies, 1, "(the kept/ directory aside)");
        // The next successful load still gets the next id.
        assert_eq!(server.load(&built_plugin()).expect("reload").id(), 2);
    }

    #[test]
    fn a_missing_file_is_refused_clearly() {
        let dir = TestDir::new("missing");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let missing = dir.0.join("no-such-plugin.so");
        let error = server.load(&missing).expect_err("nothing to load");
        assert!(matches!(error, CodeError::MissingFile { .. }), "{error:?}");
        assert!(error.to_string().contains("does not exist"), "{error}");
        assert!(server.current().is_none());
        assert!(server.versions().is_empty());
    }

    #[test]
    fn a_library_without_the_symbols_is_refused_naming_the_symbol() {
        // Any Rust dylib without our exports will do: a proc-macro of this build.
        let deps = built_plugin()
            .ancestors()
            .find(|dir| dir.ends_with("debug"))
            .expect("the plugin is in target/debug")
            .join("deps");
        let other_library = fs::read_dir(&deps)
            .expect("target/debug/deps")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| {
                        name.starts_with("libthiserror_impl-") && name.ends_with(".so")
                    })
            })
            .expect("thiserror's proc-macro library is built with this crate");
        let dir = TestDir::new("missing-symbol");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let error = server.load(&other_library).expect_err("no plugin symbols");
        assert!(
            matches!(
                error,
                CodeError::MissingSymbol {
                    symbol: "math_abi_version",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("`math_abi_version`"), "{error}");
        assert!(server.current().is_none());
    }

    #[test]
    fn two_loads_get_distinct_files_and_ids() {
        let dir = TestDir::new("two-loads");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let first = server.load(&built_plugin()).expect("first load");
        let second = server.load(&built_plugin()).expect("second load");
        assert_eq!((first.id(), second.id()), (1, 2));
        assert_ne!(first.path(), second.path());
        assert_eq!(first.sha256(), second.sha256());
        // Two separate mappings, not one cached library.
        assert_ne!(first.sum_run_address(), second.sum_run_address());
        assert!(Arc::ptr_eq(&server.current().expect("current"), &second));
    }

    #[test]
    fn an_old_version_lives_while_a_computation_holds_it() {
        let dir = TestDir::new("old-version");
        let server = CodeServer::new(dir.0.clone(), Check::InProcess);
        let old = server.load(&built_plugin()).expect("first load");
        let old_path = old.path().to_path_buf();
        let mut endless = old.start_sum(-1);
        drop(old);
        let new = server.load(&built_plugin()).expect("second load");

        let versions = server.versions();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(
            (
                versions[0].id,
                versions[0].current,
                versions[0].computations
            ),
            (1, false, 1)
        );
        assert_eq!(
            (
                versions[1].id,
                versions[1].current,
                versions[1].computations
            ),
            (2, true, 0)
        );
        assert!(old_path.exists());

        // The old code keeps running.
        assert!(matches!(endless.run(100), SumStep::Yielded { .. }));
        assert_eq!(endless.version().id(), 1);

        // Once the computation ends, the old version is purged.
        drop(endless);
        server.settle();
        let versions = server.versions();
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert_eq!(versions[0].id, new.id());
        assert!(!old_path.exists());
    }
}
