//! `eostok-train launch --gpus N fit ...`: one `fit` process per GPU on this
//! machine, with the variables of `dist::DistEnv` set (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, `EOSTOK_NCCL_ID_FILE`).
//!
//! * The children run in their own process group, so a Ctrl-C in the terminal
//!   reaches the launcher only; the launcher forwards SIGINT/SIGTERM to every
//!   child once. The ranks agree on the step to stop at (fit all-reduces the
//!   signal state with the gradients), rank 0 saves, all exit 130/143, and so
//!   does the launcher.
//! * When a child fails, the others are sent SIGTERM (a rank whose peer died
//!   would wait in NCCL forever), and SIGKILL after a grace period; the
//!   launcher exits non-zero, naming the first rank that failed.
//! * The NCCL unique id goes from rank 0 to the others through a file in the
//!   temporary directory whose name the launcher picks fresh for each launch
//!   (no network transport of our own); rank 0 deletes it once NCCL is up, the
//!   launcher at the end in any case.

use crate::dist::ENV_ID_FILE;
use anyhow::{anyhow, Result};
use eostok_models::exit::{bad_input, Interrupted, SignalFlag};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long children get to stop after a SIGTERM sent because a peer failed.
pub const KILL_GRACE: Duration = Duration::from_secs(30);

pub struct LaunchOptions {
    /// Processes (one per GPU, cuda:LOCAL_RANK).
    pub gpus: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// The command line of each child after the program name; starts with `fit`.
    pub args: Vec<OsString>,
}

/// `eostok-train launch`: refuses, with the reason, where multi-process training cannot run.
pub fn launch(opts: &LaunchOptions, signals: &SignalFlag) -> Result<()> {
    if opts.gpus == 0 {
        return Err(bad_input("--gpus must be at least 1"));
    }
    if opts.args.first().and_then(|a| a.to_str()) != Some("fit") {
        return Err(bad_input("launch runs `fit`: eostok-train launch --gpus N fit --device cuda ..."));
    }
    if !cfg!(feature = "nccl") {
        return Err(bad_input(
            "launch: this build has no NCCL; multi-GPU data-parallel training needs CUDA GPUs and a build with --features nccl (docs/gpu.md)",
        ));
    }
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this program's path to start the ranks: {e}"))?;
    let id_file = std::env::temp_dir().join(format!("eostok-nccl-{}-{}.id", std::process::id(), now_nanos()));
    let r = launch_with(&exe, opts, &id_file, signals);
    let _ = std::fs::remove_file(&id_file);
    r
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The command of rank `rank`: `program ARGS` with the rendezvous variables set.
pub fn rank_command(program: &Path, opts: &LaunchOptions, rank: usize, id_file: &Path) -> Command {
    let mut c = Command::new(program);
    c.args(&opts.args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", opts.gpus.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", &opts.master_addr)
        .env("MASTER_PORT", opts.master_port.to_string())
        .env(ENV_ID_FILE, id_file);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a terminal's Ctrl-C reaches the launcher only, which forwards
        // it once (a second SIGINT would make fit exit at once, without saving).
        c.process_group(0);
    }
    c
}

/// Start `opts.gpus` copies of `program` and supervise them (`launch` without the checks;
/// tests run it with a shell as the program).
pub fn launch_with(program: &Path, opts: &LaunchOptions, id_file: &Path, signals: &SignalFlag) -> Result<()> {
    let mut children: Vec<Child> = Vec::with_capacity(opts.gpus);
    for rank in 0..opts.gpus {
        match rank_command(program, opts, rank, id_file).spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in &mut children {
                    send(c, SIGTERM);
                }
                let _ = supervise(children, signals, KILL_GRACE);
                return Err(anyhow!("cannot start rank {rank} ({}): {e}", program.display()));
            }
        }
    }
    eprintln!("launched {} ranks (pids {})", opts.gpus, children.iter().map(|c| c.id().to_string()).collect::<Vec<_>>().join(", "));
    outcome(&supervise(children, signals, KILL_GRACE)?)
}

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

fn send(c: &Child, sig: i32) {
    #[cfg(unix)]
    unsafe {
        libc::kill(c.id() as libc::pid_t, sig);
    }
    #[cfg(not(unix))]
    let _ = (c, sig);
}

/// What happened to each rank.
#[derive(Debug)]
pub struct Supervised {
    pub statuses: Vec<ExitStatus>,
    /// The signal forwarded to the ranks, if one arrived.
    pub forwarded: Option<i32>,
    /// The first rank that failed on its own (not after a forwarded signal).
    pub first_failure: Option<usize>,
}

/// Wait for every child: forward the first SIGINT/SIGTERM to all of them; when one
/// fails, SIGTERM the rest and SIGKILL whoever is still running `grace` later.
pub fn supervise(mut children: Vec<Child>, signals: &SignalFlag, grace: Duration) -> Result<Supervised> {
    let n = children.len();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; n];
    let mut forwarded = None;
    let mut first_failure = None;
    let mut terminate_at: Option<Instant> = None;
    loop {
        if let (None, Some(sig)) = (forwarded, signals.received()) {
            forwarded = Some(sig);
            for (c, s) in children.iter().zip(&statuses) {
                if s.is_none() {
                    send(c, sig);
                }
            }
        }
        for i in 0..n {
            if statuses[i].is_none() {
                if let Some(st) = children[i].try_wait()? {
                    statuses[i] = Some(st);
                    if !st.success() && forwarded.is_none() && first_failure.is_none() {
                        first_failure = Some(i);
                        eprintln!("rank {i} failed ({}); stopping the other ranks", describe(&st));
                        for (c2, s2) in children.iter().zip(&statuses) {
                            if s2.is_none() {
                                send(c2, SIGTERM);
                            }
                        }
                        terminate_at = Some(Instant::now() + grace);
                    }
                }
            }
        }
        if statuses.iter().all(|s| s.is_some()) {
            break;
        }
        if terminate_at.is_some_and(|t| Instant::now() >= t) {
            for (c, s) in children.iter_mut().zip(&statuses) {
                if s.is_none() {
                    let _ = c.kill();
                }
            }
            terminate_at = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Supervised { statuses: statuses.into_iter().map(|s| s.expect("all exited")).collect(), forwarded, first_failure })
}

fn describe(st: &ExitStatus) -> String {
    if let Some(code) = st.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = st.signal() {
            return format!("killed by signal {sig}");
        }
    }
    "no exit code".into()
}

/// The launcher's own result, under the exit-code convention: a rank's bad input is
/// bad input (2), a forwarded signal is 130/143, anything else an internal failure (1).
pub fn outcome(s: &Supervised) -> Result<()> {
    if let Some(i) = s.first_failure {
        let st = &s.statuses[i];
        return Err(match st.code() {
            Some(2) => bad_input(format!("rank {i} of {} exited with code 2 (bad input; its error is above)", s.statuses.len())),
            _ => anyhow!("rank {i} of {} failed ({})", s.statuses.len(), describe(st)),
        });
    }
    if let Some(sig) = s.forwarded {
        return Err(Interrupted(sig).into());
    }
    match s.statuses.iter().position(|st| !st.success()) {
        Some(i) => Err(anyhow!("rank {i} failed ({})", describe(&s.statuses[i]))),
        None => Ok(()),
    }
}

/// The default id file of a run started without the launcher (`RANK`/`WORLD_SIZE` set by
/// hand or another launcher, no `EOSTOK_NCCL_ID_FILE`): under the run directory, so that
/// ranks on several machines sharing that directory find it.
pub fn default_id_file(out: &Path, port: Option<u16>) -> PathBuf {
    out.join(format!(".nccl-id-{}", port.unwrap_or(0)))
}
