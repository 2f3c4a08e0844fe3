//! Files and local users, through the real binary: who may use a home, what
//! a planted symlink can make the daemon do (nothing), which process `stop`
//! signals, which source tree `upgrade` builds, and the daemon's hygiene
//! (descriptors it does not keep, SIGHUP).
//!
//! Tests run as root; "another user" is uid 65534, as whom the tests make
//! the files that user would have made (created then chowned).

use crate::support;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, PATIENCE, is_alive, system, text};

/// True (and a note on stderr) when the test cannot make files of another user.
fn not_root() -> bool {
    let skip = !nix::unistd::geteuid().is_root();
    if skip {
        eprintln!("skipped: needs root to make files of another user");
    }
    skip
}

fn give_to_nobody(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown {}", path.display());
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn start(home: &Path) -> std::process::Output {
    system(home, &["start", "--http", "127.0.0.1:0"])
}

#[test]
fn a_home_owned_by_another_user_is_refused_naming_its_owner() {
    if not_root() {
        return;
    }
    let scratch = support::home();
    // A world-writable, sticky place like /tmp, where uid 65534 made the home first.
    let shared = scratch.path().join("shared");
    mkdir(&shared, 0o1777);
    let home = shared.join("home");
    mkdir(&home, 0o700);
    give_to_nobody(&home);

    let output = start(&home);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("is owned by nobody (uid 65534)"), "{said}");
    assert!(said.contains(&home.display().to_string()), "{said}");
    assert!(entries(&home).is_empty(), "files were made in it: {said}");
    assert_eq!(mode(&home), 0o700);
}

#[test]
fn an_existing_home_open_to_others_is_refused_and_left_as_it_is() {
    let scratch = support::home();
    let home = scratch.path().join("home");
    mkdir(&home, 0o755);
    let output = start(&home);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("open to other users (mode 0755)"), "{said}");
    assert_eq!(mode(&home), 0o755, "the home was chmodded");
    assert!(entries(&home).is_empty(), "files were made in it: {said}");

    // A home the daemon creates is private from the start.
    let fresh = support::home();
    std::fs::remove_dir(fresh.path()).unwrap();
    let daemon = started_in(fresh);
    assert_eq!(mode(daemon.home()), 0o700);
}

#[test]
fn read_only_commands_on_a_symlinked_or_missing_home_create_and_change_nothing() {
    let scratch = support::home();
    let target = scratch.path().join("target");
    mkdir(&target, 0o755);
    if !not_root() {
        give_to_nobody(&target);
    }
    let link = scratch.path().join("link");
    symlink(&target, &link).unwrap();
    for command in ["status", "pid", "stop", "log"] {
        let output = system(&link, &[command]);
        let said = text(&output);
        assert!(!output.status.success(), "{command}: {said}");
        assert!(said.contains("is a symlink"), "{command}: {said}");
        assert!(entries(&target).is_empty(), "{command} made files: {said}");
        assert_eq!(mode(&target), 0o755, "{command} chmodded the target");
    }
    let missing = scratch.path().join("missing");
    for command in ["status", "pid", "stop", "log"] {
        let output = system(&missing, &[command]);
        let said = text(&output);
        assert!(!output.status.success(), "{command}: {said}");
        assert!(said.contains("not running"), "{command}: {said}");
        assert!(!missing.exists(), "{command} created the home");
    }
}

#[test]
fn a_symlinked_log_dir_plugins_dir_or_lock_file_is_refused_and_its_target_untouched() {
    let scratch = support::home();
    let victim = scratch.path().join("victim");
    mkdir(&victim, 0o755);

    let home = scratch.path().join("with-log-link");
    mkdir(&home, 0o700);
    symlink(&victim, home.join("log")).unwrap();
    let output = start(&home);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("log is a symlink"), "{said}");

    let home = scratch.path().join("with-plugins-link");
    mkdir(&home, 0o700);
    symlink(&victim, home.join("plugins")).unwrap();
    let output = start(&home);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("plugins is a symlink"), "{said}");

    let home = scratch.path().join("with-lock-link");
    mkdir(&home, 0o700);
    symlink(victim.join("created-by-root"), home.join("system.lock")).unwrap();
    let output = start(&home);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("system.lock is a symlink"), "{said}");

    assert!(
        entries(&victim).is_empty(),
        "written through a link: {said}"
    );
}

#[test]
fn planted_pid_state_and_temporary_symlinks_are_replaced_not_followed() {
    let scratch = support::home();
    let home = support::home();
    mkdir(&home.path().join("log"), 0o700);
    let names = [
        "system.pid",
        "system.json",
        "system.json.tmp",
        "log/system.log",
    ];
    for name in names {
        let victim = scratch
            .path()
            .join(format!("victim-{}", name.replace('/', "-")));
        std::fs::write(&victim, "victim").unwrap();
        symlink(&victim, home.path().join(name)).unwrap();
    }
    let output = start(home.path());
    let said = text(&output);
    assert!(output.status.success(), "start failed: {said}");
    assert!(
        said.contains("system.log: Too many levels of symbolic links")
            && said.contains("the daemon will run without a log"),
        "{said}"
    );
    let daemon = Daemon::adopt(home);
    for name in names {
        let victim = scratch
            .path()
            .join(format!("victim-{}", name.replace('/', "-")));
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "victim",
            "{name}"
        );
    }
    let pid_file = daemon.home().join("system.pid");
    assert!(std::fs::symlink_metadata(&pid_file).unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        daemon.pid.to_string()
    );
    assert_eq!(mode(&pid_file), 0o600);
    assert!(daemon.system(&["stop"]).status.success());
}

#[test]
fn a_planted_partial_plugin_copy_is_replaced_not_followed() {
    use sha2::Digest;
    let scratch = support::home();
    let home = support::home();
    mkdir(&home.path().join("plugins"), 0o700);
    let bytes = std::fs::read(support::plugin()).expect("the plugin");
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let partial = home
        .path()
        .join("plugins")
        .join(format!("math_plugin-v1-{}.so.partial", &sha[..12]));
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "victim").unwrap();
    symlink(&victim, &partial).unwrap();

    let daemon = started_in(home);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
    assert!(!partial.exists(), "the partial copy was renamed into place");
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn stop_signals_only_the_process_holding_the_home_lock() {
    let daemon = Daemon::start();
    let mut victim = Command::new("sleep").arg("60").spawn().expect("sleep");
    let state_file = daemon.home().join("system.json");
    let state = std::fs::read_to_string(&state_file).unwrap();
    let swapped = state.replace(
        &format!("\"pid\": {}", daemon.pid),
        &format!("\"pid\": {}", victim.id()),
    );
    assert_ne!(swapped, state, "{state}");
    std::fs::write(&state_file, &swapped).unwrap();

    let output = daemon.system(&["stop"]);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "names pid {}, but that process does not hold the home's lock",
            victim.id()
        )),
        "{said}"
    );
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim was killed"
    );
    assert!(daemon.is_alive());
    assert_eq!(daemon.get("/health").0, 200);

    std::fs::write(&state_file, &state).unwrap();
    let output = daemon.system(&["stop"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!daemon.is_alive());
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim was killed"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

/// A `math-plugin` whose build script leaves `marker` when it runs.
fn planted_tree(root: &Path, marker: &Path) {
    let plugin = root.join("math-plugin");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(
        plugin.join("Cargo.toml"),
        "[package]\nname = \"math-plugin\"\nversion = \"6.6.6\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(plugin.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        plugin.join("build.rs"),
        format!("fn main() {{ std::fs::write({marker:?}, \"ran\").unwrap(); }}\n"),
    )
    .unwrap();
}

/// `system upgrade` (no `--source`) run from `cwd`, with its own target dir.
fn upgrade_from(daemon: &Daemon, cwd: &Path, target: &Path) -> std::process::Output {
    Command::new(support::binary())
        .arg("--home")
        .arg(daemon.home())
        .arg("upgrade")
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("SYSTEM_HOME")
        .output()
        .expect("the system binary runs")
}

#[test]
fn upgrade_does_not_build_a_found_tree_another_user_could_have_planted() {
    if not_root() {
        return;
    }
    let daemon = Daemon::start();
    let scratch = support::home();
    let marker = scratch.path().join("build-script-ran");
    let target = scratch.path().join("target");

    // A tree of uid 65534's.
    let theirs = scratch.path().join("theirs");
    planted_tree(&theirs, &marker);
    give_to_nobody(&theirs);
    let output = upgrade_from(&daemon, &theirs.join("math-plugin/src"), &target);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("refusing to build math-plugin found in"),
        "{said}"
    );
    assert!(said.contains("is owned by nobody (uid 65534)"), "{said}");
    assert!(said.contains("Pass --source DIR"), "{said}");

    // Our own tree, in a directory anyone may write to (not sticky).
    let open = scratch.path().join("open");
    mkdir(&open, 0o777);
    let ours = open.join("ours");
    planted_tree(&ours, &marker);
    let output = upgrade_from(&daemon, &ours, &target);
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("writable by group or others and not sticky (mode 0777)"),
        "{said}"
    );

    assert!(!marker.exists(), "a planted build script ran");
    assert!(!target.exists(), "something was built");
    assert!(!daemon.log().contains("code upgrade"));
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn start_returns_although_a_descriptor_of_the_caller_is_a_pipe_to_cat() {
    let home = support::home();
    let output = Command::new("timeout")
        .args(["60", "bash", "-c"])
        .arg(r#""$0" --home "$1" start --http 127.0.0.1:0 3>&1 | cat"#)
        .arg(support::binary())
        .arg(home.path())
        .env("SYSTEM_PLUGIN", support::plugin())
        .env_remove("SYSTEM_HOME")
        .output()
        .expect("bash runs");
    let said = text(&output);
    assert!(
        output.status.success(),
        "status {:?} (124: timed out): {said}",
        output.status.code()
    );
    let daemon = Daemon::adopt(home);
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn the_daemon_keeps_no_pipe_of_its_starter() {
    let daemon = Daemon::start();
    let pipes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid))
        .expect("the daemon's descriptors")
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("pipe:"))
        .collect();
    assert!(pipes.is_empty(), "the daemon holds pipes: {pipes:?}");
}

#[test]
fn sighup_reopens_the_log_and_the_daemon_serves_on() {
    let daemon = Daemon::start();
    let log = daemon.home().join("log/system.log");
    let rotated = daemon.home().join("log/system.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid),
        nix::sys::signal::SIGHUP,
    )
    .expect("SIGHUP");
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log).is_ok_and(|text| text.contains("log reopened")) {
        assert!(
            Instant::now() < deadline,
            "no reopened log; the old one says:\n{}",
            std::fs::read_to_string(&rotated).unwrap_or_default()
        );
        assert!(is_alive(daemon.pid), "SIGHUP killed the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("SIGHUP: reopening the log"), "{old}");
    assert_eq!(daemon.get("/health").0, 200);
    assert_eq!(mode(&log), 0o600);
    let output = daemon.system(&["stop"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}

/// A daemon started in `home` (stopped and removed when dropped).
fn started_in(home: tempfile::TempDir) -> Daemon {
    let output = start(home.path());
    let said = text(&output);
    assert!(output.status.success(), "start failed: {said}");
    Daemon::adopt(home)
}
