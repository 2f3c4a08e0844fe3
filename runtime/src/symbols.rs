//! Turns native stack samples (`crate::stack`) into frames a person reads:
//! function, file:line, inlined frames where the debug info has them, from
//! the daemon's binary and every library it has loaded (a dlopen'd plugin
//! too: each loaded object's own debug info, found by `dl_iterate_phdr`);
//! folds away the runtime's and tokio's frames below a process's poll; and
//! sums a profile's samples into the hottest functions and folded stacks.
//!
//! It runs on the requester's thread, never in a signal handler and never
//! on a scheduler (loading debug info reads files and allocates).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::stack::Sample;

/// One function of a native stack, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeFrame {
    /// The function, demangled without its hash (`math_plugin::calc_sum_loop`),
    /// or the address if no symbol covers it.
    pub function: String,
    /// `file:line` (the file's last three path components), if known.
    pub location: Option<String>,
    /// Inlined into the frame that follows.
    pub inlined: bool,
    /// Inlined from Rust's standard library (`core`, `std`, `alloc`):
    /// dropped by [`fold`], as noise between a function and its own code.
    pub inlined_library: bool,
}

impl std::fmt::Display for NativeFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.function)?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        if self.inlined {
            f.write_str(" (inlined)")?;
        }
        Ok(())
    }
}

/// One loaded object (the binary or a library): its file, its load bias,
/// and the address ranges of its loaded segments.
struct Object {
    path: PathBuf,
    bias: usize,
    segments: Vec<(usize, usize)>,
}

/// Debug info opened so far, by file and load bias (a plugin version is
/// loaded under a file name of its own); objects no longer loaded are
/// dropped at the next symbolisation.
static LOADERS: Mutex<Vec<Opened>> = Mutex::new(Vec::new());

/// An object's `(file, load bias)` and its debug info (`None`: none readable).
type Opened = ((PathBuf, usize), Option<addr2line::Loader>);

/// Symbolises samples: one per request, so that it sees the objects loaded
/// now; it caches each address it resolved.
pub struct Symbolizer {
    objects: Vec<Object>,
    resolved: HashMap<usize, Vec<NativeFrame>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        let objects = loaded_objects();
        let mut loaders = LOADERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loaders.retain(|((path, bias), _)| {
            objects
                .iter()
                .any(|object| &object.path == path && object.bias == *bias)
        });
        Symbolizer {
            objects,
            resolved: HashMap::new(),
        }
    }

    /// The frames of `sample`, innermost first, inlined frames expanded.
    pub fn frames(&mut self, sample: &Sample) -> Vec<NativeFrame> {
        sample
            .addresses
            .iter()
            .enumerate()
            .flat_map(|(index, &address)| {
                // A return address points after its call: look up the call.
                let probe = if index == 0 {
                    address
                } else {
                    address.saturating_sub(1)
                };
                self.resolve(probe)
            })
            .collect()
    }

    fn resolve(&mut self, address: usize) -> Vec<NativeFrame> {
        if let Some(frames) = self.resolved.get(&address) {
            return frames.clone();
        }
        let frames = self.lookup(address);
        self.resolved.insert(address, frames.clone());
        frames
    }

    fn lookup(&self, address: usize) -> Vec<NativeFrame> {
        let unknown = || {
            vec![NativeFrame {
                function: format!("{address:#x}"),
                location: None,
                inlined: false,
                inlined_library: false,
            }]
        };
        let Some(object) = self.objects.iter().find(|object| {
            object
                .segments
                .iter()
                .any(|&(start, end)| (start..end).contains(&address))
        }) else {
            return unknown();
        };
        let probe = (address - object.bias) as u64;
        let mut loaders = LOADERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (object.path.clone(), object.bias);
        let index = match loaders.iter().position(|(loaded, _)| *loaded == key) {
            Some(index) => index,
            None => {
                let loader = match addr2line::Loader::new(&object.path) {
                    Ok(loader) => Some(loader),
                    Err(error) => {
                        tracing::debug!(path = %object.path.display(), %error, "no debug info");
                        None
                    }
                };
                loaders.push((key, loader));
                loaders.len() - 1
            }
        };
        let Some(loader) = &loaders[index].1 else {
            return vec![NativeFrame {
                function: format!("{address:#x} in {}", file_name(&object.path)),
                location: None,
                inlined: false,
                inlined_library: false,
            }];
        };
        let mut frames = Vec::new();
        if let Ok(mut iter) = loader.find_frames(probe) {
            while let Ok(Some(frame)) = iter.next() {
                let function = frame
                    .function
                    .as_ref()
                    .and_then(|name| name.demangle().ok())
                    .map(|name| name.into_owned());
                let file = frame.location.as_ref().and_then(|location| location.file);
                let location = frame.location.as_ref().and_then(|location| {
                    Some(format!("{}:{}", short_path(location.file?), location.line?))
                });
                frames.push(NativeFrame {
                    function: function.unwrap_or_else(|| "?".to_owned()),
                    location,
                    inlined: true,
                    inlined_library: file.is_some_and(is_standard_library),
                });
            }
        }
        let symbol = loader
            .find_symbol(probe)
            .map(|name| addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned());
        if let Some(outer) = frames.last_mut() {
            outer.inlined = false;
            outer.inlined_library = false;
            // The symbol table has the whole path (`math_plugin::spin`),
            // where line-tables-only debug info has the bare name.
            if let Some(symbol) = &symbol {
                outer.function.clone_from(symbol);
            }
        }
        // No debug info for this address: the symbol table's name.
        if frames.iter().all(|frame| frame.function == "?") {
            let location = frames.first().and_then(|frame| frame.location.clone());
            frames = vec![NativeFrame {
                function: symbol
                    .unwrap_or_else(|| format!("{address:#x} in {}", file_name(&object.path))),
                location,
                inlined: false,
                inlined_library: false,
            }];
        }
        frames
    }
}

/// Keeps the frames of the process's own code: drops the runtime's poll
/// wrapper and everything outside it (tokio's worker, the thread's start),
/// the panic-catching frames just inside it, and what was inlined from the
/// standard library (`i128::overflowing_add` inside the loop that adds).
/// A walk that never reached the wrapper is kept whole.
pub fn fold(frames: Vec<NativeFrame>) -> Vec<NativeFrame> {
    let mut frames = frames;
    frames.retain(|frame| !frame.inlined_library);
    let Some(cut) = frames
        .iter()
        .position(|frame| is_poll_wrapper(&frame.function))
    else {
        return frames;
    };
    frames.truncate(cut);
    while frames
        .last()
        .is_some_and(|frame| is_unwind_catcher(&frame.function))
    {
        frames.pop();
    }
    if frames
        .last()
        .is_some_and(|frame| is_runtime_bookkeeping(&frame.function))
    {
        // The wrapper's own work around the process's poll (its clock, its
        // watch slot, its memory counters): not the process's code.
        frames.clear();
    }
    if frames.is_empty() {
        // Caught between the runtime's wrapper and the process's future.
        frames.push(NativeFrame {
            function: ENTRY_OR_EXIT.to_owned(),
            location: None,
            inlined: false,
            inlined_library: false,
        });
    }
    frames
}

/// The runtime's `Instrumented::poll`, which polls every process (and its
/// closures), or what polls it: the low-priority runners, tokio's tracing
/// wrapper and task harness. The outer ones matter when the sample caught
/// the wrapper's own entry or exit, whose frame a frame-pointer walk skips.
fn is_poll_wrapper(function: &str) -> bool {
    function.contains(crate::registry::POLL_FRAME)
        || function.starts_with("system_runtime::low_priority::")
        || function.starts_with("<system_runtime::low_priority::")
        || function.starts_with("<tracing::instrument::Instrumented<")
        || function.starts_with("tokio::runtime::task::")
}

/// What a sample taken as the poll enters or leaves the process's future shows.
pub const ENTRY_OR_EXIT: &str = "(the runtime, entering or leaving the poll)";

/// A source file of Rust's standard library (its sources are recorded under
/// `/rustc/<commit>/library/`).
fn is_standard_library(file: &str) -> bool {
    file.starts_with("/rustc/") || file.contains("/lib/rustlib/src/rust/library/")
}

/// What the runtime's wrapper calls around a process's poll.
fn is_runtime_bookkeeping(function: &str) -> bool {
    [
        "system_runtime::memory::",
        "system_runtime::watch::",
        "system_runtime::activity::",
        "system_runtime::current::",
        "quanta::",
    ]
    .iter()
    .any(|module| {
        function.starts_with(module)
            || function
                .strip_prefix('<')
                .is_some_and(|f| f.starts_with(module))
    })
}

fn is_unwind_catcher(function: &str) -> bool {
    function.starts_with("std::panicking::")
        || function.starts_with("std::panic::catch_unwind")
        || function.starts_with("<core::panic::unwind_safe::AssertUnwindSafe<")
        || function.starts_with("__rust_try")
}

/// A sample of `pid`'s poll, symbolised and folded, one line per frame.
pub fn native_stacktrace(pid: u64) -> Result<Vec<String>, crate::stack::SampleError> {
    let sample = crate::stack::sample(pid)?;
    Ok(fold(Symbolizer::new().frames(&sample))
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// A profile's samples summed up: how many, the functions they were in
/// (the innermost frame, inlined ones included) by count, and folded stacks.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub samples: usize,
    /// `(function, samples)`, most first.
    pub functions: Vec<(String, usize)>,
    /// `outermost;…;innermost` and its count, most first (the format
    /// flame-graph tools read, one `stack count` per line).
    pub folded: Vec<(String, usize)>,
}

impl Report {
    pub fn of(samples: &[Sample]) -> Report {
        let mut symbolizer = Symbolizer::new();
        let mut functions: HashMap<String, usize> = HashMap::new();
        let mut folded: HashMap<String, usize> = HashMap::new();
        for sample in samples {
            let frames = fold(symbolizer.frames(sample));
            let innermost = frames
                .first()
                .map_or_else(|| "?".to_owned(), |frame| frame.function.clone());
            *functions.entry(innermost).or_default() += 1;
            let mut stack = String::new();
            for frame in frames.iter().rev() {
                if !stack.is_empty() {
                    stack.push(';');
                }
                // `;` separates frames and a space ends the stack in the format.
                stack.push_str(&frame.function.replace([';', ' '], "_"));
            }
            *folded.entry(stack).or_default() += 1;
        }
        let ranked = |map: HashMap<String, usize>| {
            let mut rows: Vec<(String, usize)> = map.into_iter().collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            rows
        };
        Report {
            samples: samples.len(),
            functions: ranked(functions),
            folded: ranked(folded),
        }
    }

    /// The folded stacks, one `stack count` per line.
    pub fn folded_text(&self) -> String {
        let mut text = String::new();
        for (stack, count) in &self.folded {
            let _ = writeln!(text, "{stack} {count}");
        }
        text
    }
}

/// The last three components of a source path (`math-plugin/src/lib.rs`).
fn short_path(file: &str) -> String {
    let parts: Vec<&str> = file.rsplitn(4, '/').collect();
    let kept = parts.len().min(3);
    parts[..kept]
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Every object loaded now, from the dynamic loader's list.
fn loaded_objects() -> Vec<Object> {
    let mut objects: Vec<Object> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` the loader passes
    // for the duration of the call, and `data` is the `&mut Vec` above,
    // used only inside this call (dl_iterate_phdr calls back synchronously).
    unsafe {
        nix::libc::dl_iterate_phdr(
            Some(collect_object),
            std::ptr::from_mut(&mut objects).cast(),
        );
    }
    let executable = std::env::current_exe().ok();
    for object in &mut objects {
        if object.path.as_os_str().is_empty()
            && let Some(executable) = &executable
        {
            object.path = executable.clone();
        }
    }
    objects.retain(|object| !object.path.as_os_str().is_empty() && !object.segments.is_empty());
    objects
}

unsafe extern "C" fn collect_object(
    info: *mut nix::libc::dl_phdr_info,
    _size: nix::libc::size_t,
    data: *mut nix::libc::c_void,
) -> nix::libc::c_int {
    // SAFETY: `data` is the `Vec<Object>` `loaded_objects` passed, alive and
    // not otherwise borrowed during this call.
    let objects = unsafe { &mut *data.cast::<Vec<Object>>() };
    // SAFETY: the loader passes a valid `dl_phdr_info` for this call.
    let info = unsafe { &*info };
    let path = if info.dlpi_name.is_null() {
        PathBuf::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string that
        // lives while the object is loaded (at least for this call).
        let name = unsafe { CStr::from_ptr(info.dlpi_name) };
        PathBuf::from(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
        )
    };
    let bias = info.dlpi_addr as usize;
    let headers: &[nix::libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of the
        // object, valid for this call.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let segments = headers
        .iter()
        .filter(|header| header.p_type == nix::libc::PT_LOAD)
        .map(|header| {
            let start = bias.wrapping_add(header.p_vaddr as usize);
            (start, start.wrapping_add(header.p_memsz as usize))
        })
        .collect();
    objects.push(Object {
        path,
        bias,
        segments,
    });
    0
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;

    fn frame(function: &str) -> NativeFrame {
        NativeFrame {
            function: function.to_owned(),
            location: None,
            inlined: false,
            inlined_library: false,
        }
    }

    #[test]
    fn the_runtime_and_tokio_below_the_poll_are_folded_away() {
        let frames = vec![
            frame("math_plugin::spin"),
            frame("<host::Sum as core::future::future::Future>::poll"),
            frame("std::panicking::catch_unwind::do_call"),
            frame(
                "<core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once",
            ),
            frame(
                "<system_runtime::registry::harness::Instrumented<F> as core::future::future::Future>::poll",
            ),
            frame("tokio::runtime::task::harness::poll_future"),
        ];
        let kept: Vec<String> = fold(frames).into_iter().map(|f| f.function).collect();
        assert_eq!(
            kept,
            [
                "math_plugin::spin",
                "<host::Sum as core::future::future::Future>::poll"
            ]
        );
    }

    #[test]
    fn a_sample_of_the_wrappers_own_entry_folds_to_a_marker() {
        // The wrapper's frame itself was skipped (its prologue was running).
        let frames = vec![
            frame("std::panic::catch_unwind"),
            frame("<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll"),
            frame("tokio::runtime::task::core::Core<T,S>::poll::{{closure}}"),
        ];
        let kept: Vec<String> = fold(frames).into_iter().map(|f| f.function).collect();
        assert_eq!(kept, [ENTRY_OR_EXIT]);
    }

    #[test]
    fn the_wrappers_own_bookkeeping_folds_to_a_marker() {
        let frames = vec![
            frame("std::thread::local::LocalKey<T>::with"),
            frame("system_runtime::memory::thread_bytes"),
            frame(
                "<system_runtime::registry::harness::Instrumented<F> as core::future::future::Future>::poll",
            ),
            frame("tokio::runtime::task::harness::poll_future"),
        ];
        let kept: Vec<String> = fold(frames).into_iter().map(|f| f.function).collect();
        assert_eq!(kept, [ENTRY_OR_EXIT]);
    }

    #[test]
    fn a_path_keeps_its_last_three_components() {
        assert_eq!(
            short_path("/a/b/math-plugin/src/lib.rs"),
            "math-plugin/src/lib.rs"
        );
        assert_eq!(short_path("src/lib.rs"), "src/lib.rs");
    }
}
