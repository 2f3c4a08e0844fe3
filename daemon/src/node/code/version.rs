//! One loaded version of the math plugin and its FFI: opening the library,
//! resolving its symbols, and every call into it. This is the only module of
//! the code server with `unsafe` code; the rest of the daemon calls the
//! plugin only through [`PluginVersion`] and [`RawSum`].
//!
//! It must not decide what a call's result means (that is
//! `code::computation`'s job), and must not unload a library on the caller's
//! thread when an [`Unloader`] was given: the last `Arc` of an old version
//! usually drops in a `sum` process, on a scheduler.
//!
//! # Safety
//!
//! What the daemon relies on, and what the plugin ABI (`plugin-abi`) promises:
//!
//! - **Only checked libraries are opened.** [`PluginVersion::open`] runs the
//!   library's initialisers: it is called only on a versioned copy that passed
//!   `system plugin-check` in a child process (or, in unit tests, on the
//!   trusted build of the plugin), so the initialisers are the plugin's own.
//! - **Symbols have plugin-abi's types.** Each symbol is resolved as the
//!   function type `plugin-abi` declares for it, and `math_abi_version` is
//!   called (it takes nothing and returns a number) and must equal
//!   [`abi::ABI_VERSION`] before any other symbol is called.
//! - **Function pointers never outlive the library.** They live in
//!   [`PluginVersion`] next to the `Library` they came from, and the library is
//!   closed only in `PluginVersion`'s `Drop`, after the last `Arc` is gone.
//!   A [`RawSum`] holds an `Arc` of its version, so a running computation
//!   keeps its library mapped.
//! - **Out-parameters are the caller's.** `math_validate` and `math_sum_run`
//!   only write into the `Validation` / `SumStep` they are given; the daemon
//!   passes a live local, initialised to the ABI's `UNWRITTEN` value (which
//!   reads as a refusal / a crash if the plugin writes nothing).
//! - **The sum state is owned once.** The pointer from `math_sum_start` is
//!   owned by one [`RawSum`], used through `&mut self` only (one thread at a
//!   time, which the ABI allows from any thread) and freed exactly once, with
//!   the same library's `math_sum_free`, in `RawSum`'s `Drop`.
//! - **Nothing unwinds across the boundary.** The plugin catches its own
//!   panics (a crash is a `Crashed` step or a rejected validation).
//! - **The version string is static.** `math_plugin_version` returns null or
//!   a NUL-terminated string that lives as long as the library; it is copied
//!   at once.

use std::ffi::{CStr, c_void};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libloading::Library;
use plugin_abi as abi;

use super::CodeError;
use super::unload::{Unload, Unloader};

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
    /// Where the library is unloaded once the last holder is gone; `None`:
    /// on the thread that drops it (a library opened only to be checked).
    unloader: Option<Unloader>,
}

impl PluginVersion {
    /// Opens `library` only to check it (in the check process): id 0, and
    /// dropping it unloads it here and leaves the file alone.
    pub(crate) fn open_for_check(
        library: &Path,
        shown_as: &Path,
    ) -> Result<PluginVersion, CodeError> {
        PluginVersion::open(0, shown_as, library.to_path_buf(), String::new(), None)
    }

    /// Opens the versioned copy and checks ABI version, symbols and version string.
    /// `source_path` is the file the operator asked for, used in errors.
    /// Once dropped, the library is closed and the copy removed by `unloader`.
    pub(super) fn open(
        id: u32,
        source_path: &Path,
        path: PathBuf,
        sha256: String,
        unloader: Option<Unloader>,
    ) -> Result<PluginVersion, CodeError> {
        // SAFETY: loading runs the library's initialisers; only a copy that
        // passed the check in a child process (or the trusted build, in unit
        // tests) gets here (module doc, "Only checked libraries are opened").
        let library = unsafe { Library::new(&path) }.map_err(|source| CodeError::NotALibrary {
            path: source_path.to_path_buf(),
            source,
        })?;
        // SAFETY: `AbiVersionFn` is plugin-abi's type for `math_abi_version`.
        let abi_version: abi::AbiVersionFn =
            unsafe { resolve(&library, abi::SYM_ABI_VERSION, source_path) }?;
        // SAFETY: `math_abi_version` takes nothing and only returns a number;
        // `library` is loaded for the duration of the call.
        let found = unsafe { abi_version() };
        if found != abi::ABI_VERSION {
            return Err(CodeError::AbiMismatch {
                path: source_path.to_path_buf(),
                found,
                expected: abi::ABI_VERSION,
            });
        }
        // SAFETY: `PluginVersionFn` is plugin-abi's type for `math_plugin_version`.
        let plugin_version: abi::PluginVersionFn =
            unsafe { resolve(&library, abi::SYM_PLUGIN_VERSION, source_path) }?;
        let functions = Functions {
            // SAFETY: `ValidateFn` is plugin-abi's type for `math_validate`.
            validate: unsafe { resolve(&library, abi::SYM_VALIDATE, source_path) }?,
            // SAFETY: `SumStartFn` is plugin-abi's type for `math_sum_start`.
            sum_start: unsafe { resolve(&library, abi::SYM_SUM_START, source_path) }?,
            // SAFETY: `SumRunFn` is plugin-abi's type for `math_sum_run`.
            sum_run: unsafe { resolve(&library, abi::SYM_SUM_RUN, source_path) }?,
            // SAFETY: `SumFreeFn` is plugin-abi's type for `math_sum_free`.
            sum_free: unsafe { resolve(&library, abi::SYM_SUM_FREE, source_path) }?,
        };
        let bad_version = |reason: &str| CodeError::BadVersionString {
            path: source_path.to_path_buf(),
            reason: reason.to_string(),
        };
        // SAFETY: the ABI says this takes nothing and returns null or a
        // static NUL-terminated string; `library` is loaded.
        let version_ptr = unsafe { plugin_version() };
        if version_ptr.is_null() {
            return Err(bad_version("it is null"));
        }
        // SAFETY: non-null, NUL-terminated and alive while `library` is
        // loaded, per the ABI; copied into a `String` before `library` can go.
        let version = unsafe { CStr::from_ptr(version_ptr) }
            .to_str()
            .map_err(|_| bad_version("it is not UTF-8"))?
            .to_string();
        if id != 0 {
            match code_range(&path) {
                Some((start, end)) => crate::os::fatal::plugin_loaded(id, start, end),
                None => tracing::warn!(
                    "cannot find the code of {} in /proc/self/maps; its faults will not be told apart",
                    path.display()
                ),
            }
        }
        Ok(PluginVersion {
            id,
            version,
            path,
            sha256,
            computations: AtomicUsize::new(0),
            functions,
            library: Some(library),
            unloader,
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
        // SAFETY: the library is loaded while `self` lives, `validate` has
        // plugin-abi's type, and `out` is a live local the plugin only writes.
        unsafe { (self.functions.validate)(n, &mut out) };
        if out.is_accepted() {
            Ok(())
        } else if out.reason().is_empty() {
            Err("rejected by the plugin".to_string())
        } else {
            Err(out.reason().to_string())
        }
    }

    /// The address of `math_sum_run` in this mapping (two loads of the same
    /// bytes are two mappings, two addresses).
    #[cfg(test)]
    pub(super) fn sum_run_address(&self) -> usize {
        self.functions.sum_run as usize
    }
}

impl fmt::Display for PluginVersion {
    /// How the log and the console name a version, e.g. `v2 (1.1.0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{} ({})", self.id, self.version)
    }
}

impl Drop for PluginVersion {
    fn drop(&mut self) {
        let Some(library) = self.library.take() else {
            return;
        };
        crate::os::fatal::plugin_unloaded(self.id);
        let unload = Unload {
            library,
            // Opened only to be checked (id 0): the file is the daemon's, not ours.
            copy: (self.id != 0).then(|| self.path.clone()),
            name: format!("math_plugin {self}"),
        };
        match &self.unloader {
            Some(unloader) => unloader.unload(unload),
            None => unload.run(),
        }
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

/// A `sum(n)` started in the plugin: the plugin's state, owned here and
/// freed on drop. It keeps its version (and so the library) loaded.
pub struct RawSum {
    version: Arc<PluginVersion>,
    /// Owned by this value; null if the plugin could not start the sum.
    state: *mut c_void,
}

// SAFETY: the state is owned by this value alone, and the ABI allows using
// it from any thread, one at a time (`run` takes `&mut self`); the version is
// an `Arc` of a `Sync` value (its function pointers are plain addresses).
unsafe impl Send for RawSum {}

impl RawSum {
    /// Starts `sum(n)` on `version`; counted in its computations until dropped.
    pub fn start(version: &Arc<PluginVersion>, n: i64) -> RawSum {
        // SAFETY: the library is loaded while `version` lives, `sum_start`
        // has plugin-abi's type; the state it returns is freed in `RawSum::drop`.
        let state = unsafe { (version.functions.sum_start)(n) };
        // Relaxed: a plain counter for display, it guards no other data.
        version.computations.fetch_add(1, Ordering::Relaxed);
        RawSum {
            version: Arc::clone(version),
            state,
        }
    }

    /// The version this sum runs on.
    pub fn version(&self) -> &Arc<PluginVersion> {
        &self.version
    }

    /// Whether the plugin could start the sum.
    pub fn started(&self) -> bool {
        !self.state.is_null()
    }

    /// One slice of at most `budget` reductions, exactly as the plugin wrote
    /// it (checking it is the caller's job); `None` if the sum never started.
    pub fn run(&mut self, budget: u64) -> Option<abi::SumStep> {
        if self.state.is_null() {
            return None;
        }
        let mut out = abi::SumStep::UNWRITTEN;
        // SAFETY: the library is loaded (we hold its `Arc`), `sum_run` has
        // plugin-abi's type, `state` came from this library's
        // `math_sum_start` and is used only through `&mut self`, and `out`
        // is a live local the plugin only writes.
        unsafe { (self.version.functions.sum_run)(self.state, budget, &mut out) };
        Some(out)
    }
}

impl Drop for RawSum {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // SAFETY: `state` came from this library's `math_sum_start`, the
            // library is still loaded (we hold its `Arc` until after this),
            // and it is freed once, here.
            unsafe { (self.version.functions.sum_free)(self.state) };
        }
        self.version.computations.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The addresses of a loaded library's executable mappings, `[start, end)`
/// (from `/proc/self/maps`, the lines naming its file), for the fatal
/// handler to tell a fault in plugin code from any other.
fn code_range(path: &Path) -> Option<(usize, usize)> {
    let path = path.canonicalize().ok()?;
    let path = path.to_str()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            // The path is the rest of the line from its first `/` (it may hold spaces).
            let file = &line[line.find('/')?..];
            (perms.contains('x') && file == path).then_some(range)
        })
        .filter_map(|range| {
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
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
    // SAFETY: the caller guarantees `T` is the symbol's real type; the value
    // copied out is a function pointer kept next to `library` (module doc).
    let symbol = unsafe { library.get::<T>(name) }.map_err(|source| CodeError::MissingSymbol {
        path: source_path.to_path_buf(),
        symbol: abi::symbol_name(name),
        source,
    })?;
    Ok(*symbol)
}
