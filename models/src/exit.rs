//! One exit-code convention for every eostok binary:
//! 0 success, 1 internal failure, 2 bad input (usage, unreadable or invalid
//! files, bad data), 130 after SIGINT, 143 after SIGTERM.
//! Errors print as one line naming the file and the problem; user errors never
//! show a panic backtrace.

use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const INTERNAL: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const SIGINT_EXIT: u8 = 130;
pub const SIGTERM_EXIT: u8 = 143;

/// Marks an error as the user's input being wrong (exit 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

/// The run stopped because of a signal (exit 128 + signal number).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            2 => "SIGINT",
            15 => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "interrupted by {name}")
    }
}
impl std::error::Error for Interrupted {}

/// `bail!`-like constructor for bad-input errors.
pub fn bad_input(msg: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.to_string()))
}

/// Tag any error as bad input, with context (usually the file name).
pub trait BadInputExt<T> {
    fn bad_input(self, context: impl fmt::Display) -> anyhow::Result<T>;
}

impl<T, E: fmt::Display> BadInputExt<T> for Result<T, E> {
    fn bad_input(self, context: impl fmt::Display) -> anyhow::Result<T> {
        self.map_err(|e| bad_input(format!("{context}: {e}")))
    }
}

/// An output file path the user gave: not a directory, its directory
/// exists, and a file can be created there (checked with a probe file, so
/// a long job fails at once instead of at its end). Bad input otherwise.
pub fn check_output_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::path::Path;
    if path.is_dir() {
        return Err(bad_input(format!("{}: is a directory; give a file name", path.display())));
    }
    if path.file_name().is_none() {
        return Err(bad_input(format!("{}: not a file name", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(bad_input(format!("{}: directory {} does not exist", path.display(), parent.display())));
    }
    let probe = parent.join(format!(".eostok-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(bad_input(format!("{}: cannot write there: {e}", path.display()))),
    }
}

/// Exit code for an error: looks through the whole chain for our markers.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() {
            return BAD_INPUT;
        }
        if let Some(Interrupted(sig)) = cause.downcast_ref::<Interrupted>() {
            return 128u8.saturating_add(*sig as u8);
        }
    }
    INTERNAL
}

/// One line: the whole context chain joined by ": ".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        // Context layers often repeat their source; keep the line short.
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Run a binary's main body under the convention: prints `prog: error: ...`
/// and returns the right exit code. Panics (bugs) print one line and exit 1.
pub fn run(prog: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    let prog_owned = prog.to_string();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("{prog_owned}: internal error (please report): {msg}{at}");
    }));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let code = code_for(&e);
            eprintln!("{prog}: error: {}", one_line(&e));
            ExitCode::from(code)
        }
        Err(_) => ExitCode::from(INTERNAL),
    }
}

/// SIGINT/SIGTERM recorded into a flag instead of killing the process, so
/// long jobs can finish their step, save and exit 130/143.
#[derive(Clone)]
pub struct SignalFlag(Arc<AtomicUsize>);

impl SignalFlag {
    /// Install handlers for SIGINT and SIGTERM. A second signal of the same
    /// kind while the first is pending terminates at once (the user insists).
    pub fn install() -> anyhow::Result<SignalFlag> {
        let flag = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the conditional shutdown is registered first, so
            // it only fires when a signal was already seen before this one.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())?;
            signal_hook::flag::register(sig, seen.clone())?;
            signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)?;
        }
        Ok(SignalFlag(flag))
    }
    /// The signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }
    /// Err(Interrupted) once a signal arrived.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.received() {
            Some(sig) => Err(Interrupted(sig).into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes() {
        let e = bad_input("x.gguf: truncated");
        assert_eq!(code_for(&e), BAD_INPUT);
        let e = e.context("while loading");
        assert_eq!(code_for(&e), BAD_INPUT);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), INTERNAL);
        assert_eq!(code_for(&Interrupted(2).into()), SIGINT_EXIT);
        assert_eq!(code_for(&Interrupted(15).into()), SIGTERM_EXIT);
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("nope"));
        let e = r.bad_input("data/x.png").unwrap_err();
        assert_eq!(code_for(&e), BAD_INPUT);
        assert_eq!(one_line(&e), "data/x.png: nope");
    }
}
