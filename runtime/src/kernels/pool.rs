//! A small spin-waiting thread pool for the matmul row split, as llama.cpp does: the AR
//! step makes ~85 short matmul calls per token, and rayon's workers go to sleep between
//! them, so each call paid a futex wake-up (~13% of a B q4_0 token here). These workers
//! spin on a generation counter for a while after each job (`SPIN`), then park; the
//! calling thread takes tasks too. Tasks are claimed from an atomic counter and the caller
//! never waits for a worker that has not started: it runs whatever is left itself, then
//! waits only for tasks in progress. A worker descheduled on a busy machine (other
//! processes on the cores) therefore costs nothing, where a pool that waits for every
//! worker collapses (llama.cpp at 2 threads beside one busy process: a few tokens/s).
//!
//! One job at a time: a second concurrent caller (or a call from inside a job) gets `false`
//! from [`Pool::run`] and uses rayon instead.
//!
//! The default since 2026-11-26; `EOSTOK_POOL=rayon` opts out. Measured on the 2-core
//! machine, B q4_0 decode at 2 threads, interleaved: 142-157 tokens/s against rayon's
//! 69-70 beside one niced single-thread training run, and 78-84 against 43-44 with a
//! nice-0 busy loop added (more runnable threads than cores). An earlier measurement under
//! load average 6-9 had rayon ahead (18-29 vs 14-16 tokens/s); that load is not what
//! laptops and boards running one generation see.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    generation: AtomicUsize,
    job: AtomicPtr<Job<'static>>,
    next: AtomicUsize,
    /// Set by the caller once every task is claimed; a worker arriving later skips the job.
    closed: AtomicBool,
    /// Workers inside the current job.
    active: AtomicUsize,
    panicked: AtomicBool,
    sleeping: Vec<AtomicBool>,
}

pub struct Pool {
    shared: &'static Shared,
    threads: Vec<Thread>,
    busy: Mutex<()>,
}

fn worker(shared: &'static Shared, id: usize) {
    let mut seen = 0usize;
    loop {
        let mut t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(256) || t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            shared.sleeping[id].store(true, SeqCst);
            if shared.generation.load(SeqCst) == seen {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            shared.sleeping[id].store(false, SeqCst);
            t0 = Instant::now();
        }
        // Enter, then check the job is still open: the caller closes it and then waits for
        // `active` to drop to zero, so either it waits for us or we skip (both SeqCst).
        shared.active.fetch_add(1, SeqCst);
        if !shared.closed.load(SeqCst) {
            // The job outlives the caller's wait on `active`.
            let job = unsafe { &*shared.job.load(SeqCst) };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_tasks(shared, job)));
            if r.is_err() {
                shared.panicked.store(true, SeqCst);
            }
        }
        shared.active.fetch_sub(1, SeqCst);
    }
}

fn take_tasks(shared: &Shared, job: &Job) {
    loop {
        let i = shared.next.fetch_add(1, AcqRel);
        if i >= job.tasks {
            break;
        }
        (job.f)(i);
    }
}

impl Pool {
    /// The pool of `threads` (the caller plus `threads - 1` workers), started once per
    /// process with rayon's thread count at the first call.
    pub fn global() -> Option<&'static Pool> {
        static POOL: OnceLock<Option<Pool>> = OnceLock::new();
        POOL.get_or_init(|| {
            if std::env::var("EOSTOK_POOL").is_ok_and(|v| v == "rayon") {
                return None;
            }
            Pool::new(rayon::current_num_threads())
        })
        .as_ref()
    }

    fn new(threads: usize) -> Option<Pool> {
        if threads < 2 {
            return None;
        }
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: (0..threads - 1).map(|_| AtomicBool::new(false)).collect(),
        }));
        let mut handles = Vec::with_capacity(threads - 1);
        for id in 0..threads - 1 {
            let h = std::thread::Builder::new()
                .name(format!("eostok-kernel-{id}"))
                .spawn(move || worker(shared, id))
                .ok()?;
            handles.push(h.thread().clone());
        }
        Some(Pool {
            shared,
            threads: handles,
            busy: Mutex::new(()),
        })
    }

    /// Threads that run a job (workers and the caller).
    pub fn size(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `f(0..tasks)` on the pool and the calling thread; `false` (nothing run) when
    /// the pool is busy with another caller's job.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        // A panicked job poisons the lock; the pool's state is reset below either way.
        let _guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let s = self.shared;
        let job = Job { f, tasks };
        // The job lives on this stack frame until no worker is inside it (below).
        s.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
        s.next.store(0, SeqCst);
        s.closed.store(false, SeqCst);
        s.generation.fetch_add(1, SeqCst);
        for (id, t) in self.threads.iter().enumerate() {
            if s.sleeping[id].load(SeqCst) {
                t.unpark();
            }
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_tasks(s, &job)));
        // Every task is claimed; wait only for those in progress on workers.
        s.closed.store(true, SeqCst);
        while s.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        // Cleared before either panic goes on, so the next job starts clean.
        let worker_panicked = s.panicked.swap(false, SeqCst);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if worker_panicked {
            panic!("a matmul task panicked on a pool worker");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every task runs exactly once per job, over many jobs, both while the workers spin
    /// (back-to-back jobs) and after they have parked (a pause longer than `SPIN`).
    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3).expect("pool");
        assert_eq!(pool.size(), 3);
        for job in 0..400 {
            let tasks = 1 + job % 37;
            let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            assert!(pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Relaxed);
            }));
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "job {job}");
            if job % 100 == 99 {
                std::thread::sleep(SPIN * 4);
            }
        }
    }

    /// The workers take part: with tasks that wait for each other, a caller alone could not
    /// finish (two tasks must be in progress at once).
    #[test]
    fn workers_take_tasks() {
        let pool = Pool::new(2).expect("pool");
        let arrived = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        assert!(pool.run(2, &|_| {
            arrived.fetch_add(1, SeqCst);
            while arrived.load(SeqCst) < 2 {
                assert!(Instant::now() < deadline, "no worker took the second task");
                std::hint::spin_loop();
            }
        }));
    }

    /// A call from inside a job, or while another caller's job runs, gets `false` (the
    /// caller then uses rayon) instead of deadlocking.
    #[test]
    fn busy_pool_refuses() {
        let pool = Pool::new(2).expect("pool");
        let inner = AtomicU32::new(0);
        assert!(pool.run(1, &|_| {
            if !pool.run(1, &|_| {}) {
                inner.fetch_add(1, SeqCst);
            }
        }));
        assert_eq!(inner.load(SeqCst), 1);
    }

    /// A panicking task panics the caller, wherever it ran, and the pool still works after.
    #[test]
    fn panics_reach_the_caller() {
        let pool = Pool::new(2).expect("pool");
        for _ in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(8, &|i| assert!(i != 5, "task 5 fails"));
            }));
            assert!(r.is_err());
            let n = AtomicU32::new(0);
            assert!(pool.run(8, &|_| {
                n.fetch_add(1, SeqCst);
            }));
            assert_eq!(n.load(SeqCst), 8);
        }
    }

    #[test]
    fn one_thread_is_no_pool() {
        assert!(Pool::new(1).is_none());
    }
}
