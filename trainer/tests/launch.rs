//! `eostok-train launch` and the device/rank checks of `fit`, through the real
//! binary, plus the launcher's process supervision with a shell standing in for
//! the ranks (this machine has no GPU; the NCCL path itself is compile-checked
//! only: scripts/check-cuda).

use eostok_models::exit::SignalFlag;
use eostok_train::launch::{launch_with, LaunchOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion-mnist")
}

fn train(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eostok-train"));
    c.args(args);
    for k in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied()).output().unwrap()
}

fn fit_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = ["fit", "--config", "tiny", "--steps", "1", "--quiet", "--lpips", "off", "--vfm", "off", "--out", out].iter().map(|s| s.to_string()).collect();
    if !extra.contains(&"--batch") {
        v.extend(["--batch".to_string(), "4".to_string()]);
    }
    v.push("--data".into());
    v.push(fixture().to_string_lossy().into_owned());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn gpu_requests_on_a_cpu_build_fail_clearly_with_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let out = out.to_str().unwrap();
    let args = |extra: &[&str]| fit_args(out, extra);
    let run = |a: Vec<String>, env: &[(&str, &str)]| train(&a.iter().map(String::as_str).collect::<Vec<_>>(), env);

    if !cfg!(feature = "cuda") {
        let o = run(args(&["--device", "cuda:0"]), &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("built without the `cuda` feature; rebuild with --features cuda"), "{}", stderr(&o));
    }
    if !cfg!(feature = "metal") {
        let o = run(args(&["--device", "metal"]), &[]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("rebuild with --features metal"), "{}", stderr(&o));
    }
    let o = run(args(&["--device", "tpu:0"]), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected cpu, cuda:N"), "{}", stderr(&o));

    // bf16 is a CUDA-only mode.
    let o = run(args(&["--precision", "bf16"]), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bf16 needs a CUDA device"), "{}", stderr(&o));

    // Rank variables: a CPU run is one process.
    let o = run(args(&[]), &[("WORLD_SIZE", "2"), ("RANK", "0")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("WORLD_SIZE=2"), "{}", stderr(&o));
    let o = run(args(&[]), &[("WORLD_SIZE", "2"), ("RANK", "5")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("RANK=5 must be below WORLD_SIZE=2"), "{}", stderr(&o));
    let o = run(args(&["--batch", "3"]), &[("WORLD_SIZE", "2"), ("RANK", "1")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("multiple of WORLD_SIZE=2"), "{}", stderr(&o));
    assert!(!Path::new(out).exists(), "a refused run writes nothing");

    // WORLD_SIZE=1 is a plain single-process run.
    let o = run(args(&[]), &[("WORLD_SIZE", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The launcher without NCCL.
    if !cfg!(feature = "nccl") {
        let mut a = vec!["launch".to_string(), "--gpus".into(), "2".into()];
        a.extend(args(&["--device", "cuda"]));
        let o = run(a, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("needs CUDA GPUs and a build with --features nccl"), "{}", stderr(&o));
    }
    let o = run(vec!["launch".into(), "--gpus".into(), "2".into(), "describe".into()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("launch runs `fit`"), "{}", stderr(&o));
}

/// One test, so the SIGINT it raises reaches one SignalFlag only.
#[test]
fn launcher_sets_the_rank_variables_stops_the_others_on_failure_and_forwards_signals() {
    let d = tempfile::tempdir().unwrap();
    let sh = Path::new("/bin/sh");
    let id_file = d.path().join("nccl.id");
    let signals = SignalFlag::install().unwrap();
    let opts = |script: String| LaunchOptions { gpus: 3, master_addr: "10.1.2.3".into(), master_port: 29511, args: vec!["-c".into(), script.into()] };

    // Every rank gets its variables.
    let script = format!("echo \"$RANK $WORLD_SIZE $LOCAL_RANK $MASTER_ADDR $MASTER_PORT $EOSTOK_NCCL_ID_FILE\" > {}/rank-$RANK", d.path().display());
    launch_with(sh, &opts(script), &id_file, &signals).unwrap();
    for r in 0..3 {
        let line = std::fs::read_to_string(d.path().join(format!("rank-{r}"))).unwrap();
        assert_eq!(line.trim(), format!("{r} 3 {r} 10.1.2.3 29511 {}", id_file.display()));
    }

    // Rank 1 fails: the others (sleeping for a minute) are stopped at once, and the
    // launcher's error names rank 1 with the right exit-code class.
    for (code, want) in [(3, 1), (2, 2)] {
        let t = Instant::now();
        let e = launch_with(sh, &opts(format!("if [ \"$RANK\" = 1 ]; then exit {code}; fi; exec sleep 60")), &id_file, &signals).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(20), "peers were not stopped: {:?}", t.elapsed());
        assert!(e.to_string().contains("rank 1 of 3"), "{e}");
        assert_eq!(eostok_models::exit::code_for(&e), want, "{e}");
    }

    // SIGINT to the launcher reaches every rank once; the launcher exits 130.
    let marker = d.path().join("got-int");
    let ready = d.path().join("ready");
    let script = format!("trap 'touch {}-$RANK; exit 130' INT; touch {}-$RANK; sleep 60 & wait", marker.display(), ready.display());
    let raiser = std::thread::spawn(move || {
        // Only once every rank has its trap in place.
        let t = Instant::now();
        while (0..3).any(|r| !Path::new(&format!("{}-{r}", ready.display())).exists()) && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::raise(libc::SIGINT) };
    });
    let t = Instant::now();
    let e = launch_with(sh, &opts(script), &id_file, &signals).unwrap_err();
    raiser.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(eostok_models::exit::code_for(&e), 130, "{e}");
    for r in 0..3 {
        assert!(Path::new(&format!("{}-{r}", marker.display())).exists(), "rank {r} did not get SIGINT");
    }
}
