//! The code server: loads versions of the math plugin (a cdylib speaking the
//! `plugin-abi` C ABI) and hands out budgeted sum computations, so the code
//! can be upgraded while old computations keep running on the old version —
//! the Rust stand-in for the BEAM's hot code loading.
//!
//! Each load copies the library to a new versioned file name (dlopen caches by
//! path), has it checked in a child process (`plugin_check`: ABI, symbols,
//! self-test, yield check) before opening it here, and only then makes it
//! current. It must never unload a library while a computation still holds it
//! (`Arc<PluginVersion>` keeps the `Library` alive; the server keeps only weak
//! references to old versions), never let a failed load change anything, and
//! never decide *when* a computation runs — that is the scheduler's job.

use std::ffi::{CStr, c_void};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::kept::{KeptPlugins, KeptVersion};
use crate::lock;

use libloading::Library;
use plugin_abi as abi;
use sha2::{Digest, Sha256};

/// Budget of each slice in the self-test (small, so several slices are exercised).
const SELF_TEST_BUDGET: u64 = 7;
/// Slices after which a self-test sum counts as hanging.
const SELF_TEST_MAX_SLICES: usize = 1_000;
/// Sums every new version must get right before it becomes current.
const SELF_TEST_SUMS: [(i64, i128); 2] = [(5, 15), (100, 5050)];

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
    /// The check process ended without a verdict (signal, deadline, exit status).
    #[error("{} was refused: {reason}", path.display())]
    Check { path: PathBuf, reason: String },
    /// The check process refused the library; `message` is its reason.
    #[error("{message}")]
    Refused { kind: String, message: String },
    #[error("there is no previous version to roll back to")]
    NoPrevious,
}

/// Where a candidate library is checked before it is opened in the daemon.
#[derive(Clone, Debug)]
pub enum Check {
    /// In a child process (the daemon): a crash or hang there costs nothing.
    Child(crate::plugin_check::ChildCheck),
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
    /// Serialises loads, so versions become current in load order.
    loading: Mutex<()>,
    state: Mutex<Loaded>,
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
        remove_stale_copies(&dir);
        CodeServer {
            kept: KeptPlugins::new(dir.join("kept")),
            dir,
            check,
            loading: Mutex::new(()),
            state: Mutex::new(Loaded::default()),
        }
    }

    /// The versions kept in the home across restarts.
    pub fn kept(&self) -> &KeptPlugins {
        &self.kept
    }

    /// Loads the library at `path` as a new version and makes it current,
    /// once it has passed the ABI, symbol and self-test checks.
    pub fn load(&self, path: &Path) -> Result<Arc<PluginVersion>, CodeError> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => CodeError::MissingFile {
                path: path.to_path_buf(),
            },
            _ => CodeError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        self.load_bytes(path, bytes.into(), false)
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
        let previous = {
            let state = lock(&self.state);
            let count = state.recent.len();
            (count >= 2).then(|| state.recent[count - 2].clone())
        };
        let (path, bytes) = previous.ok_or(CodeError::NoPrevious)?;
        self.load_bytes(&path, bytes, true)
    }

    /// `checked`: these bytes already passed the check in this daemon.
    fn load_bytes(
        &self,
        path: &Path,
        bytes: Arc<[u8]>,
        checked: bool,
    ) -> Result<Arc<PluginVersion>, CodeError> {
        let _one_load_at_a_time = lock(&self.loading);
        let sha256 = hex(&Sha256::digest(&bytes));
        let id = lock(&self.state).loaded + 1;
        let versioned = self
            .dir
            .join(format!("math_plugin-v{id}-{}.so", &sha256[..12]));
        write_versioned_copy(&self.dir, &versioned, &bytes)?;

        // Nothing of the library runs in the daemon before it passed here.
        if let (Check::Child(child), false) = (&self.check, checked) {
            match child.run(&versioned, path) {
                Ok(slices) => tracing::info!(
                    path = %path.display(),
                    "plugin check passed in a child process; yield check slices: {}",
                    crate::plugin_check::describe(&slices)
                ),
                Err(error) => {
                    remove_versioned_copy(&versioned);
                    return Err(error);
                }
            }
        }
        let version = match PluginVersion::open(id, path, versioned.clone(), sha256) {
            Ok(version) => Arc::new(version),
            Err(error) => {
                remove_versioned_copy(&versioned);
                return Err(error);
            }
        };
        // On failure, dropping `version` unloads it and removes its copy.
        if matches!(self.check, Check::InProcess) {
            self_test(&version).map_err(|reason| CodeError::SelfTest {
                path: path.to_path_buf(),
                reason,
            })?;
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
                "code upgrade: math_plugin v{} ({}) -> v{} ({}), sha256 {} ({})",
                old.id,
                old.version,
                version.id,
                version.version,
                version.sha256,
                version.path.display()
            ),
            None => tracing::info!(
                "code loaded: math_plugin v{} ({}), sha256 {} ({})",
                version.id,
                version.version,
                version.sha256,
                version.path.display()
            ),
        }
        crate::fatal::set_code(format!("math_plugin v{} ({})", version.id, version.version));
        if let Err(error) = self
            .kept
            .record(version.id, &version.version, &version.path)
        {
            tracing::warn!(
                "cannot keep math_plugin v{} for restarts: {error}",
                version.id
            );
        }
        // The old version is unloaded here unless computations still hold it.
        drop(old);
        Ok(version)
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
                id: version.id,
                version: version.version.clone(),
                path: version.path.clone(),
                sha256: version.sha256.clone(),
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

/// Writes `bytes` to `versioned` via a temporary file and a rename, so a file
/// that may still be mapped by this or another process is never overwritten in place.
fn write_versioned_copy(dir: &Path, versioned: &Path, bytes: &[u8]) -> Result<(), CodeError> {
    let copy_error = |source| CodeError::Copy {
        path: versioned.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(copy_error)?;
    let temporary = versioned.with_extension("so.partial");
    // Created exclusively, never through a symlink, and read-only: a mapped
    // library overwritten in place would crash the daemon.
    crate::home::write_new(&temporary, bytes, 0o400).map_err(copy_error)?;
    fs::rename(&temporary, versioned).map_err(|source| {
        remove_versioned_copy(&temporary);
        copy_error(source)
    })
}

/// Removes the versioned copies in `dir` (not the kept ones): called before
/// anything is loaded, they can only be a dead daemon's.
fn remove_stale_copies(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("math_plugin-v")
        {
            remove_versioned_copy(&entry.path());
        }
    }
}

/// Best-effort removal of a versioned copy that is no longer loaded.
fn remove_versioned_copy(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not remove plugin copy")
        }
    }
}

/// Resolves `name` as a function of type `T`, naming the symbol if it is missing.
///
/// # Safety
/// `T` must be the `plugin-abi` function type of `name`.
unsafe fn resolve<T: Copy>(
    library: &Library,
    name: &'static [u8],
    source_path: &Path,
) -> Result<T, CodeError> {
    // SAFETY: the caller guarantees `T` is the symbol's real type.
    let symbol = unsafe { library.get::<T>(name) }.map_err(|source| CodeError::MissingSymbol {
        path: source_path.to_path_buf(),
        symbol: abi::symbol_name(name),
        source,
    })?;
    Ok(*symbol)
}

/// Checks that a freshly opened version computes and validates correctly.
pub(crate) fn self_test(version: &Arc<PluginVersion>) -> Result<(), String> {
    version
        .validate(5)
        .map_err(|reason| format!("validate(5) was rejected: {reason}"))?;
    for (n, expected) in SELF_TEST_SUMS {
        let mut computation = version.start_sum(n);
        let mut slices = 0;
        loop {
            if slices == SELF_TEST_MAX_SLICES {
                return Err(format!(
                    "sum({n}) did not finish within {SELF_TEST_MAX_SLICES} slices of {SELF_TEST_BUDGET} reductions"
                ));
            }
            slices += 1;
            match computation.run(SELF_TEST_BUDGET) {
                SumStep::Yielded { .. } => {}
                SumStep::Done { result, .. } if result == expected => break,
                SumStep::Done { result, .. } => {
                    return Err(format!("sum({n}) returned {result}, expected {expected}"));
                }
                SumStep::Crashed { message, .. } => {
                    return Err(format!("sum({n}) crashed: {message}"));
                }
            }
        }
    }
    Ok(())
}

/// The plugin functions a version calls after loading.
#[derive(Clone, Copy)]
struct Functions {
    validate: abi::ValidateFn,
    sum_start: abi::SumStartFn,
    sum_run: abi::SumRunFn,
    sum_free: abi::SumFreeFn,
}

/// One loaded version of the plugin. Shared by `Arc`: the library stays
/// loaded (and its versioned file on disk) until the last holder is gone.
pub struct PluginVersion {
    id: u32,
    version: String,
    path: PathBuf,
    sha256: String,
    computations: AtomicUsize,
    functions: Functions,
    /// `Some` until dropped; the pointers in `functions` are valid while it is loaded.
    library: Option<Library>,
}

impl PluginVersion {
    /// Opens `library` only to check it (in the check process): id 0, and
    /// dropping it leaves the file alone.
    pub(crate) fn open_for_check(
        library: &Path,
        shown_as: &Path,
    ) -> Result<PluginVersion, CodeError> {
        PluginVersion::open(0, shown_as, library.to_path_buf(), String::new())
    }

    /// Opens the versioned copy and checks ABI version, symbols and version string.
    /// `source_path` is the file the operator asked for, used in errors.
    fn open(
        id: u32,
        source_path: &Path,
        path: PathBuf,
        sha256: String,
    ) -> Result<PluginVersion, CodeError> {
        // SAFETY: loading runs the library's initialisers; the plugin directory
        // is trusted code, exactly like a BEAM release's .beam files.
        let library = unsafe { Library::new(&path) }.map_err(|source| CodeError::NotALibrary {
            path: source_path.to_path_buf(),
            source,
        })?;
        // SAFETY (all `resolve` calls): each type is plugin-abi's type for that symbol.
        let abi_version: abi::AbiVersionFn =
            unsafe { resolve(&library, abi::SYM_ABI_VERSION, source_path) }?;
        // SAFETY: `math_abi_version` takes nothing and only returns a number.
        let found = unsafe { abi_version() };
        if found != abi::ABI_VERSION {
            return Err(CodeError::AbiMismatch {
                path: source_path.to_path_buf(),
                found,
                expected: abi::ABI_VERSION,
            });
        }
        let plugin_version: abi::PluginVersionFn =
            unsafe { resolve(&library, abi::SYM_PLUGIN_VERSION, source_path) }?;
        let functions = Functions {
            validate: unsafe { resolve(&library, abi::SYM_VALIDATE, source_path) }?,
            sum_start: unsafe { resolve(&library, abi::SYM_SUM_START, source_path) }?,
            sum_run: unsafe { resolve(&library, abi::SYM_SUM_RUN, source_path) }?,
            sum_free: unsafe { resolve(&library, abi::SYM_SUM_FREE, source_path) }?,
        };
        let bad_version = |reason: &str| CodeError::BadVersionString {
            path: source_path.to_path_buf(),
            reason: reason.to_string(),
        };
        // SAFETY: the ABI says this returns null or a static NUL-terminated string.
        let version_ptr = unsafe { plugin_version() };
        if version_ptr.is_null() {
            return Err(bad_version("it is null"));
        }
        // SAFETY: non-null, static and NUL-terminated per the ABI; copied before use.
        let version = unsafe { CStr::from_ptr(version_ptr) }
            .to_str()
            .map_err(|_| bad_version("it is not UTF-8"))?
            .to_string();
        Ok(PluginVersion {
            id,
            version,
            path,
            sha256,
            computations: AtomicUsize::new(0),
            functions,
            library: Some(library),
        })
    }

    /// 1, 2, 3… in load order (successful loads only).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What `math_plugin_version` returned, e.g. `1.0.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// SHA-256 of the library file, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The versioned copy this version was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Live computations running on this version.
    pub fn computations(&self) -> usize {
        self.computations.load(Ordering::Relaxed)
    }

    /// Asks the plugin whether `n` may be summed; `Err(reason)` if not.
    pub fn validate(&self, n: i64) -> Result<(), String> {
        let mut out = abi::Validation::UNWRITTEN;
        // SAFETY: the library is loaded while `self` lives and `out` is a live local.
        unsafe { (self.functions.validate)(n, &mut out) };
        if out.is_accepted() {
            Ok(())
        } else if out.reason().is_empty() {
            Err("rejected by the plugin".to_string())
        } else {
            Err(out.reason().to_string())
        }
    }

    /// Starts `sum(n)` on this version; the computation keeps the version loaded.
    pub fn start_sum(self: &Arc<Self>, n: i64) -> SumComputation {
        // SAFETY: the library is loaded while `self` lives; the state is freed in `SumComputation::drop`.
        let state = unsafe { (self.functions.sum_start)(n) };
        // Relaxed: a plain counter for display, it guards no other data.
        self.computations.fetch_add(1, Ordering::Relaxed);
        SumComputation {
            version: Arc::clone(self),
            state,
        }
    }
}

impl Drop for PluginVersion {
    fn drop(&mut self) {
        if let Some(library) = self.library.take()
            && let Err(error) = library.close()
        {
            tracing::warn!(id = self.id, %error, "could not unload math_plugin version");
        }
        if self.id == 0 {
            // Opened only to be checked: the file is the daemon's, not ours.
            return;
        }
        remove_versioned_copy(&self.path);
        tracing::info!("code purged: math_plugin v{} ({})", self.id, self.version);
    }
}

impl fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginVersion")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("path", &self.path)
            .field("computations", &self.computations())
            .finish()
    }
}

/// What one slice of a sum did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SumStep {
    Done {
        result: i128,
        reductions: u64,
    },
    Yielded {
        reductions: u64,
        /// The call about to be made, e.g. `math_plugin::calc_sum(501, -1, 125250)`.
        frame: abi::Frame,
    },
    Crashed {
        message: String,
        reductions: u64,
    },
}

impl SumStep {
    /// Reductions used in the slice.
    pub fn reductions(&self) -> u64 {
        match self {
            SumStep::Done { reductions, .. }
            | SumStep::Yielded { reductions, .. }
            | SumStep::Crashed { reductions, .. } => *reductions,
        }
    }
}

/// A running `sum(n)` on one plugin version. Dropping it frees the plugin's
/// state; it keeps its version loaded until then.
pub struct SumComputation {
    version: Arc<PluginVersion>,
    /// Owned by this computation; null if the plugin could not start it.
    state: *mut c_void,
}

// SAFETY: the state is owned exclusively by this computation and the ABI
// allows using it from any thread, one at a time (`run` takes `&mut self`).
unsafe impl Send for SumComputation {}

impl SumComputation {
    /// The version this computation runs on (even after newer loads).
    pub fn version(&self) -> &Arc<PluginVersion> {
        &self.version
    }

    /// Runs at most `budget` reductions. A plugin that breaks the ABI
    /// (overruns the budget, unknown status) is reported as a crash.
    pub fn run(&mut self, budget: u64) -> SumStep {
        if self.state.is_null() {
            return SumStep::Crashed {
                message: "the plugin could not start the computation".to_string(),
                reductions: 0,
            };
        }
        let mut out = abi::SumStep::UNWRITTEN;
        // SAFETY: the library is loaded (we hold its Arc), `state` came from its
        // `math_sum_start` and is used only through `&mut self`, `out` is a live local.
        unsafe { (self.version.functions.sum_run)(self.state, budget, &mut out) };
        if out.reductions > budget {
            return SumStep::Crashed {
                message: format!(
                    "plugin broke the ABI: used {} reductions of a budget of {budget}",
                    out.reductions
                ),
                reductions: budget,
            };
        }
        match out.status {
            abi::SUM_DONE => SumStep::Done {
                result: out.result,
                reductions: out.reductions,
            },
            abi::SUM_YIELDED => SumStep::Yielded {
                reductions: out.reductions,
                frame: out.frame,
            },
            abi::SUM_CRASHED => SumStep::Crashed {
                message: out.message().to_string(),
                reductions: out.reductions,
            },
            other => SumStep::Crashed {
                message: format!("plugin broke the ABI: unknown status {other}"),
                reductions: out.reductions,
            },
        }
    }
}

impl Drop for SumComputation {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // SAFETY: `state` came from this library's `math_sum_start` and is freed once, here.
            unsafe { (self.version.functions.sum_free)(self.state) };
        }
        self.version.computations.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for SumComputation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SumComputation")
            .field("version", &self.version.id)
            .field("started", &!self.state.is_null())
            .finish()
    }
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
        assert_ne!(
            first.functions.sum_run as usize,
            second.functions.sum_run as usize
        );
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
        let versions = server.versions();
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert_eq!(versions[0].id, new.id());
        assert!(!old_path.exists());
    }
}
