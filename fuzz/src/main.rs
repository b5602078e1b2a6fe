//! eostok-fuzz: structure-aware fuzzing on stable Rust.
//!
//! ```text
//! eostok-fuzz run TARGET --seeds DIR... --corpus DIR --crashes DIR --secs N [--mem-mb 1024] [--seed N]
//! eostok-fuzz replay TARGET FILE_OR_DIR...      # exit 1 if any input panics
//! eostok-fuzz minimize TARGET IN OUT            # shrink a panicking input
//! eostok-fuzz shrink TARGET IN OUT              # shrink an input keeping its outcome (for the regression corpus)
//! ```
//! `run` starts a worker process that mutates corpus inputs in a loop, runs
//! the target under `catch_unwind` and keeps inputs with a new outcome
//! signature; the worker's address space is limited (`--mem-mb`), so an
//! unbounded allocation aborts it. The parent restarts a worker that died
//! (abort, out of memory, signal) or stopped answering for 20 s (hang),
//! saving the input it was running. Figures go to stdout as one JSON line.

use eostok_fuzz::mutate::Rng;
use eostok_fuzz::{files_in, fnv64, run_caught, shape_of, target, Target, TARGETS};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Args {
    target: String,
    seeds: Vec<PathBuf>,
    corpus: PathBuf,
    crashes: PathBuf,
    secs: u64,
    mem_mb: u64,
    seed: u64,
}

fn usage() -> ExitCode {
    eprintln!("usage: eostok-fuzz run TARGET --seeds DIR... --corpus DIR --crashes DIR --secs N [--mem-mb MB] [--seed N]\n       eostok-fuzz replay TARGET FILE_OR_DIR...\n       eostok-fuzz minimize TARGET IN OUT\ntargets: {}", TARGETS.join(", "));
    ExitCode::from(2)
}

fn parse(args: &[String]) -> Option<Args> {
    let mut a = Args { target: args.first()?.clone(), seeds: vec![], corpus: PathBuf::new(), crashes: PathBuf::new(), secs: 60, mem_mb: 1024, seed: 1 };
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1)?;
        match args[i].as_str() {
            "--seeds" => a.seeds.push(v.into()),
            "--corpus" => a.corpus = v.into(),
            "--crashes" => a.crashes = v.into(),
            "--secs" => a.secs = v.parse().ok()?,
            "--mem-mb" => a.mem_mb = v.parse().ok()?,
            "--seed" => a.seed = v.parse().ok()?,
            _ => return None,
        }
        i += 2;
    }
    (!a.corpus.as_os_str().is_empty() && !a.crashes.as_os_str().is_empty()).then_some(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { return usage() };
    let rest = &args[1..];
    match cmd.as_str() {
        "run" | "worker" => {
            let Some(a) = parse(rest) else { return usage() };
            if target(&a.target).is_none() {
                return usage();
            }
            if cmd == "run" {
                parent(a)
            } else {
                worker(a)
            }
        }
        "replay" => replay(rest),
        "minimize" => minimize(rest),
        "shrink" => shrink(rest),
        _ => usage(),
    }
}

// ------------------------------------------------------------- parent ----

fn parent(a: Args) -> ExitCode {
    for d in [&a.corpus, &a.crashes] {
        if let Err(e) = std::fs::create_dir_all(d) {
            eprintln!("eostok-fuzz: {}: {e}", d.display());
            return ExitCode::from(2);
        }
    }
    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.secs);
    let (mut execs, mut corpus, mut restarts, mut seed) = (0u64, 0u64, 0u64, a.seed);
    let mut out_of_process: Vec<String> = vec![];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        let mut cmd = Command::new(&exe);
        cmd.arg("worker").arg(&a.target).args(["--corpus"]).arg(&a.corpus).arg("--crashes").arg(&a.crashes);
        for s in &a.seeds {
            cmd.arg("--seeds").arg(s);
        }
        cmd.args(["--secs", &left.to_string(), "--mem-mb", &a.mem_mb.to_string(), "--seed", &seed.to_string()]);
        let mut child = match cmd.stdout(Stdio::piped()).spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("eostok-fuzz: cannot start a worker: {e}");
                return ExitCode::from(1);
            }
        };
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut last_execs, mut hung) = (0u64, false);
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    // "hb EXECS CORPUS CRASHES" or "done ..."
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() >= 4 {
                        last_execs = f[1].parse().unwrap_or(last_execs);
                        corpus = f[2].parse().unwrap_or(corpus);
                        if f[0] == "hb" && start.elapsed().as_secs().is_multiple_of(30) {
                            eprintln!("[{:>4}s] execs {} corpus {} crashes {}", start.elapsed().as_secs(), execs + last_execs, corpus, f[3]);
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    hung = true;
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("wait");
        execs += last_execs;
        if hung || !status.success() {
            let why = if hung { "hang".to_string() } else { format!("abort ({status})") };
            let current = a.crashes.join(".current");
            if let Ok(bytes) = std::fs::read(&current) {
                let name = format!("{}-{:016x}.bin", if hung { "hang" } else { "abort" }, fnv64(&bytes));
                let _ = std::fs::write(a.crashes.join(&name), &bytes);
                eprintln!("eostok-fuzz: worker died: {why}; input saved as {name}");
                out_of_process.push(format!("{name}: {why}"));
            }
            restarts += 1;
            seed = seed.wrapping_add(0x1234_5678_9abc);
            if restarts > 50 {
                eprintln!("eostok-fuzz: too many worker deaths, stopping");
                break;
            }
        }
    }
    let crashes: Vec<String> = files_in(&a.crashes).iter().filter(|p| p.extension().is_some_and(|e| e == "bin")).map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"target": a.target, "seconds": secs.round(), "executions": execs, "execs_per_s": (execs as f64 / secs).round(),
            "corpus": corpus, "crash_files": crashes, "worker_deaths": out_of_process})
    );
    ExitCode::SUCCESS
}

// ------------------------------------------------------------- worker ----

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static IN_TARGET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn run_target(t: Target, input: &[u8]) -> Result<String, String> {
    IN_TARGET.with(|f| f.set(true));
    let r = run_caught(t, input);
    IN_TARGET.with(|f| f.set(false));
    r
}

fn limit_memory(mb: u64) {
    if mb == 0 {
        return;
    }
    let bytes = mb * 1024 * 1024;
    let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
        eprintln!("eostok-fuzz: setrlimit(RLIMIT_AS) failed; running without a memory limit");
    }
}

fn worker(a: Args) -> ExitCode {
    limit_memory(a.mem_mb);
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        if !IN_TARGET.with(|t| t.get()) {
            // The fuzzer's own bug, or a panic on another thread: say so.
            eprintln!("eostok-fuzz worker: panic outside the target: {info}");
        }
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let (t, mutator) = target(&a.target).expect("checked");
    let mut rng = Rng(a.seed ^ 0x5eed_f022);
    // Corpus: seeds first (never evicted), then saved finds.
    let mut entries: Vec<Vec<u8>> = vec![];
    let mut n_seeds = 0;
    for (i, dir) in a.seeds.iter().chain([&a.corpus]).enumerate() {
        for f in files_in(dir) {
            if let Ok(b) = std::fs::read(&f) {
                entries.push(b);
            }
        }
        if i < a.seeds.len() {
            n_seeds = entries.len();
        }
    }
    if n_seeds == 0 {
        eprintln!("eostok-fuzz: no seed inputs");
        return ExitCode::from(2);
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut crash_sigs: HashSet<String> = HashSet::new();
    let current_path = a.crashes.join(".current");
    let mut current = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&current_path).expect("crash dir writable");
    let record = |input: &[u8], current: &mut std::fs::File| {
        use std::os::unix::fs::FileExt;
        let _ = current.set_len(input.len() as u64);
        let _ = current.write_all_at(input, 0);
    };
    let mut crashes = 0usize;
    let on_panic = |input: &[u8], msg: String, crash_sigs: &mut HashSet<String>| {
        let at = PANIC_AT.with(|p| p.borrow().clone());
        let sig = format!("{at} {}", shape_of(&msg));
        if crash_sigs.insert(sig.clone()) {
            let name = format!("panic-{:016x}", fnv64(input));
            let _ = std::fs::write(a.crashes.join(format!("{name}.bin")), input);
            let _ = std::fs::write(a.crashes.join(format!("{name}.txt")), format!("{msg}\nat {at}\n"));
            eprintln!("eostok-fuzz: PANIC {name}: {msg} at {at}");
        }
    };
    for e in &entries {
        record(e, &mut current);
        match run_target(t, e) {
            Ok(sig) => {
                for part in sig.split(" | ") {
                    seen.insert(part.to_string());
                }
            }
            Err(msg) => {
                crashes += 1;
                on_panic(e, msg, &mut crash_sigs)
            }
        }
    }
    // The corpus held in memory: at most an eighth of the limit and 1000 entries.
    let budget_bytes: usize = (a.mem_mb as usize * 1024 * 1024 / 8).max(32 << 20);
    let mut held: usize = entries.iter().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    let mut last_hb = Instant::now();
    let mut execs = 0u64;
    let stdout = std::io::stdout();
    while Instant::now() < deadline {
        for _ in 0..64 {
            // Seeds (whole, valid files) a third of the time: finds are mostly
            // files cut short, and mutating only those explores little.
            let i = if rng.chance(35) { rng.below(n_seeds) } else { rng.below(entries.len()) };
            let others: Vec<&[u8]> = (0..2).map(|_| entries[rng.below(entries.len())].as_slice()).collect();
            let input = mutator.mutate(&mut rng, &entries[i], &others);
            record(&input, &mut current);
            execs += 1;
            match run_target(t, &input) {
                Ok(sig) => {
                    // Each " | "-separated part is a feature of its own: an input
                    // is kept when any part is new (not every combination of parts).
                    let mut new = false;
                    for part in sig.split(" | ") {
                        new |= seen.insert(part.to_string());
                    }
                    if new {
                        let _ = std::fs::write(a.corpus.join(format!("{:016x}", fnv64(&input))), &input);
                        held += input.len();
                        if (held > budget_bytes || entries.len() > 1000) && entries.len() > n_seeds + 1 {
                            let j = n_seeds + rng.below(entries.len() - n_seeds);
                            held -= entries[j].len();
                            entries.swap_remove(j);
                        }
                        entries.push(input);
                    }
                }
                Err(msg) => {
                    crashes += 1;
                    on_panic(&input, msg, &mut crash_sigs);
                }
            }
            if last_hb.elapsed() >= Duration::from_secs(1) {
                let _ = writeln!(stdout.lock(), "hb {execs} {} {}", seen.len(), crash_sigs.len());
                last_hb = Instant::now();
            }
        }
    }
    let _ = writeln!(stdout.lock(), "done {execs} {} {} {crashes}", seen.len(), crash_sigs.len());
    ExitCode::SUCCESS
}

// ------------------------------------------------------ replay/minimize ----

fn inputs_of(paths: &[String]) -> Vec<PathBuf> {
    let mut v = vec![];
    for p in paths {
        let p = Path::new(p);
        if p.is_dir() {
            v.extend(files_in(p));
        } else {
            v.push(p.to_path_buf());
        }
    }
    v
}

fn replay(rest: &[String]) -> ExitCode {
    let Some((t, _)) = rest.first().and_then(|n| target(n)) else { return usage() };
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let mut failed = 0;
    for f in inputs_of(&rest[1..]) {
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        match run_caught(t, &bytes) {
            Ok(sig) => println!("ok     {}: {sig}", f.display()),
            Err(msg) => {
                failed += 1;
                println!("PANIC  {}: {msg} at {}", f.display(), PANIC_AT.with(|p| p.borrow().clone()));
            }
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Greedy shrinking that keeps the same panic location: cut the tail, then
/// zero ranges (zeros compress, so the committed file stays small in git).
fn minimize(rest: &[String]) -> ExitCode {
    let (Some((t, _)), Some(inp), Some(out)) = (rest.first().and_then(|n| target(n)), rest.get(1), rest.get(2)) else { return usage() };
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let mut best = std::fs::read(inp).expect("readable input");
    let loc = |t: Target, b: &[u8]| -> Option<String> { run_caught(t, b).err().map(|_| PANIC_AT.with(|p| p.borrow().clone())) };
    let Some(want) = loc(t, &best) else {
        eprintln!("{inp}: does not panic");
        return ExitCode::from(2);
    };
    let mut chunk = best.len() / 2;
    while chunk >= 1 {
        let mut progress = false;
        // Cut the tail.
        while best.len() > chunk && loc(t, &best[..best.len() - chunk]).as_deref() == Some(&want) {
            best.truncate(best.len() - chunk);
            progress = true;
        }
        // Zero chunks (coarse only: a byte-by-byte pass over megabytes is too slow).
        let mut at = 0;
        while chunk >= 64 && at < best.len() {
            let end = (at + chunk).min(best.len());
            if best[at..end].iter().any(|&b| b != 0) {
                let mut cand = best.clone();
                cand[at..end].fill(0);
                if loc(t, &cand).as_deref() == Some(&want) {
                    best = cand;
                    progress = true;
                }
            }
            at = end;
        }
        let _ = progress;
        chunk /= 2;
    }
    std::fs::write(out, &best).expect("writable output");
    println!("{out}: {} bytes, panics at {want}", best.len());
    ExitCode::SUCCESS
}

/// Shrinking that keeps the exact outcome signature: cut the tail, then zero
/// coarse chunks (zeros compress in git). Used to keep the regression corpus small.
fn shrink(rest: &[String]) -> ExitCode {
    let (Some((t, _)), Some(inp), Some(out)) = (rest.first().and_then(|n| target(n)), rest.get(1), rest.get(2)) else { return usage() };
    std::panic::set_hook(Box::new(|_| {}));
    let mut best = std::fs::read(inp).expect("readable input");
    let Ok(want) = run_caught(t, &best) else {
        eprintln!("{inp}: panics; use minimize");
        return ExitCode::from(2);
    };
    let same = |b: &[u8]| run_caught(t, b).as_deref() == Ok(want.as_str());
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        while best.len() > chunk && same(&best[..best.len() - chunk]) {
            best.truncate(best.len() - chunk);
        }
        if chunk >= 1024 {
            let mut at = 0;
            while at < best.len() {
                let end = (at + chunk).min(best.len());
                if best[at..end].iter().any(|&b| b != 0) {
                    let mut cand = best.clone();
                    cand[at..end].fill(0);
                    if same(&cand) {
                        best = cand;
                    }
                }
                at = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    std::fs::write(out, &best).expect("writable output");
    println!("{out}: {} bytes: {want}", best.len());
    ExitCode::SUCCESS
}
