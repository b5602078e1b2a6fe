//! Data-parallel training: one process (or, in tests, one thread) per rank,
//! every rank holding the whole model, gradients summed across ranks after
//! each backward pass.
//!
//! * [`Collective`]: the only thing fit needs from a transport — rank, world
//!   size, and an all-reduce (sum) of a flat f32 tensor. Two implementations:
//!   [`LocalGroup`] (threads in one process, CPU tensors; tests) and
//!   `NcclGroup` (one process per GPU over NCCL through candle's cudarc, behind
//!   the `nccl` feature). There is no home-made network transport.
//! * [`reduce_grads`]: gradients flattened in a fixed parameter order (the
//!   variables' names, sorted) into buckets of at most `bucket_mib` MiB (a
//!   larger tensor gets a bucket of its own), all-reduced bucket by bucket,
//!   divided by the world size.
//! * [`DistEnv`]: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT` as `eostok-train launch` (or torchrun-style launchers) set them.
//!
//! Why 2 ranks × B images equal 1 rank × 2B (docs/gpu.md): `--batch` is the
//! global batch; every rank draws the same global batch (same data order,
//! same RNG draws) and keeps its own equal-sized slice. Every loss term is a
//! mean over samples, so the mean of the ranks' gradients is the gradient of
//! the global mean — except the entropy penalty's codebook term, an entropy of
//! the batch-mean code distribution, which `loss::entropy_penalty_synced`
//! computes from the all-reduced distribution.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use eostok_models::exit::bad_input;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

/// A process group: rank `rank()` of `world_size()`.
pub trait Collective: Send + Sync {
    fn world_size(&self) -> usize;
    fn rank(&self) -> usize;
    /// Element-wise sum of a 1-D f32 tensor over all ranks. Every rank calls it with
    /// the same length, in the same order of calls; every rank gets the same sum back.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
}

/// Default gradient bucket size (MiB).
pub const DEFAULT_BUCKET_MIB: f64 = 25.0;

/// Sum host scalars over all ranks (through a tensor on `dev`).
pub fn all_reduce_scalars(c: &dyn Collective, values: &[f32], dev: &Device) -> Result<Vec<f32>> {
    let t = Tensor::from_slice(values, values.len(), dev)?;
    Ok(c.all_reduce_sum(&t)?.to_vec1::<f32>()?)
}

/// Replace every gradient in `grads` by its mean over the ranks. Variables are
/// visited in the order of `vars` (a BTreeMap: sorted names, the same on every
/// rank); a variable without a gradient is skipped, and every rank must have
/// gradients for the same variables (checked: the element counts are summed too).
/// Returns the number of buckets all-reduced.
pub fn reduce_grads(c: &dyn Collective, grads: &mut GradStore, vars: &BTreeMap<String, Var>, bucket_mib: f64) -> Result<usize> {
    let world = c.world_size();
    if world == 1 {
        return Ok(0);
    }
    let limit = ((bucket_mib * 1024.0 * 1024.0) as usize / 4).max(1);
    let with_grad: Vec<(&Var, Tensor)> = vars.values().filter_map(|v| grads.get(v.as_tensor()).map(|g| (v, g.clone()))).collect();
    // The same variables on every rank, or the buckets would not line up.
    let local: usize = with_grad.iter().map(|(_, g)| g.elem_count()).sum();
    let dev = match with_grad.first() {
        Some((_, g)) => g.device().clone(),
        None => return Ok(0),
    };
    let total = all_reduce_scalars(c, &[local as f32, with_grad.len() as f32], &dev)?;
    if total[0] != (local * world) as f32 || total[1] != (with_grad.len() * world) as f32 {
        bail!("data parallel: rank {} has gradients for {} tensors ({local} values) but the ranks differ (sums {:?})", c.rank(), with_grad.len(), total);
    }
    let mut buckets = 0;
    let mut start = 0;
    while start < with_grad.len() {
        let mut end = start;
        let mut n = 0;
        while end < with_grad.len() && (end == start || n + with_grad[end].1.elem_count() <= limit) {
            n += with_grad[end].1.elem_count();
            end += 1;
        }
        let parts: Vec<Tensor> = with_grad[start..end].iter().map(|(_, g)| g.detach().to_dtype(DType::F32)?.flatten_all()).collect::<candle_core::Result<_>>()?;
        let flat = if parts.len() == 1 { parts[0].clone() } else { Tensor::cat(&parts, 0)? };
        let summed = c.all_reduce_sum(&flat).with_context(|| format!("all-reduce of gradient bucket {buckets}"))?;
        let mean = (summed / world as f64)?;
        let mut off = 0;
        for (var, g) in &with_grad[start..end] {
            let k = g.elem_count();
            let t = mean.narrow(0, off, k)?.reshape(g.shape())?.to_dtype(g.dtype())?;
            grads.insert(var.as_tensor(), t);
            off += k;
        }
        buckets += 1;
        start = end;
    }
    Ok(buckets)
}

/// The slice of the global batch this rank trains on: `[offset, offset + len)` of `global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub offset: usize,
    pub len: usize,
    pub global: usize,
}

impl Shard {
    pub fn whole(batch: usize) -> Shard {
        Shard { offset: 0, len: batch, global: batch }
    }
    /// Equal slices only: the mean of the ranks' means is the global mean only then.
    pub fn of(global: usize, rank: usize, world: usize) -> Result<Shard> {
        if world == 0 || rank >= world {
            bail!("rank {rank} of world size {world}");
        }
        if !global.is_multiple_of(world) {
            return Err(bad_input(format!("--batch {global} (the global batch) must be a multiple of the world size {world}, so every rank trains on the same number of images")));
        }
        let len = global / world;
        Ok(Shard { offset: rank * len, len, global })
    }
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.len == self.global
    }
}

// ---------------------------------------------------------------------------
// In-process group (threads; tests and CPU experiments)

struct LocalShared {
    world: usize,
    state: Mutex<LocalState>,
    cv: Condvar,
}

struct LocalState {
    /// Contributions of the current round, by rank.
    slots: Vec<Option<Vec<f32>>>,
    /// The finished sum of the current round and how many ranks still have to read it.
    result: Option<(Arc<Vec<f32>>, usize)>,
    /// A rank left (its thread returned or failed): every waiting call fails instead of hanging.
    broken: Option<usize>,
}

/// `world` ranks as threads of one process, summing CPU tensors in rank order
/// (0, 1, ...), so every rank gets a bit-identical sum. Dropping a rank breaks
/// the group: its peers' pending and later all-reduces fail instead of hanging.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<LocalShared>,
}

impl LocalGroup {
    /// The `world` ranks of a new group; hand one to each thread.
    pub fn new(world: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(LocalShared {
            world,
            state: Mutex::new(LocalState { slots: vec![None; world], result: None, broken: None }),
            cv: Condvar::new(),
        });
        (0..world).map(|rank| LocalGroup { rank, shared: shared.clone() }).collect()
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        s.broken.get_or_insert(self.rank);
        self.shared.cv.notify_all();
    }
}

impl Collective for LocalGroup {
    fn world_size(&self) -> usize {
        self.shared.world
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let dev = t.device().clone();
        let mine: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let n = mine.len();
        let sh = &self.shared;
        let broken = |s: &LocalState| s.broken.map(|r| anyhow::anyhow!("data parallel: rank {r} left the group"));
        let mut s = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        // Wait until the previous round's result has been read by everyone.
        while s.result.is_some() || s.slots[self.rank].is_some() {
            if let Some(e) = broken(&s) {
                return Err(e);
            }
            s = sh.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.slots[self.rank] = Some(mine);
        if s.slots.iter().all(|x| x.is_some()) {
            // Last to arrive: sum in rank order.
            let mut sum = vec![0f32; n];
            for (r, slot) in s.slots.iter().enumerate() {
                let v = slot.as_ref().expect("all present");
                if v.len() != n {
                    let e = anyhow::anyhow!("data parallel: rank {r} all-reduces {} values, rank {} {n}", v.len(), self.rank);
                    s.broken.get_or_insert(r);
                    sh.cv.notify_all();
                    return Err(e);
                }
                for (a, b) in sum.iter_mut().zip(v) {
                    *a += *b;
                }
            }
            for slot in s.slots.iter_mut() {
                *slot = None;
            }
            s.result = Some((Arc::new(sum), sh.world));
            sh.cv.notify_all();
        }
        loop {
            // This round's sum is ready once the slots were cleared (ours included).
            if s.slots[self.rank].is_none() {
                if let Some((sum, left)) = s.result.as_mut() {
                    let out = sum.clone();
                    *left -= 1;
                    if *left == 0 {
                        s.result = None;
                        sh.cv.notify_all();
                    }
                    drop(s);
                    return Ok(Tensor::from_vec(out.to_vec(), n, &dev)?);
                }
            }
            if let Some(e) = broken(&s) {
                return Err(e);
            }
            s = sh.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

// ---------------------------------------------------------------------------
// Environment

/// Rank and rendezvous variables of one process of a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// GPU of this process on its machine (`LOCAL_RANK`, default: `RANK`).
    pub local_rank: usize,
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
    /// Where rank 0 writes the NCCL unique id for the others (`EOSTOK_NCCL_ID_FILE`).
    pub id_file: Option<std::path::PathBuf>,
}

pub const ENV_ID_FILE: &str = "EOSTOK_NCCL_ID_FILE";

impl DistEnv {
    /// From the process environment; None when `WORLD_SIZE` is unset (a single process).
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable source (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| bad_input(format!("{k}={v}: expected a non-negative integer"))),
            }
        };
        let Some(world_size) = num("WORLD_SIZE")? else {
            if get("RANK").is_some() {
                return Err(bad_input("RANK is set but WORLD_SIZE is not"));
            }
            return Ok(None);
        };
        if world_size == 0 {
            return Err(bad_input("WORLD_SIZE=0: must be at least 1"));
        }
        let rank = match num("RANK")? {
            Some(r) => r,
            None if world_size == 1 => 0,
            None => return Err(bad_input(format!("WORLD_SIZE={world_size} but RANK is not set"))),
        };
        if rank >= world_size {
            return Err(bad_input(format!("RANK={rank} must be below WORLD_SIZE={world_size}")));
        }
        let local_rank = num("LOCAL_RANK")?.unwrap_or(rank);
        let master_port = match get("MASTER_PORT") {
            None => None,
            Some(p) => Some(p.trim().parse::<u16>().map_err(|_| bad_input(format!("MASTER_PORT={p}: expected a port number")))?),
        };
        Ok(Some(DistEnv { rank, world_size, local_rank, master_addr: get("MASTER_ADDR"), master_port, id_file: get(ENV_ID_FILE).map(Into::into) }))
    }
}

// ---------------------------------------------------------------------------
// NCCL (one process per GPU)

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_id_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

/// Wait up to `timeout` for `path` to hold exactly `len` bytes.
pub fn read_id_file(path: &std::path::Path, len: usize, timeout: std::time::Duration) -> Result<Vec<u8>> {
    let start = std::time::Instant::now();
    loop {
        if let Ok(b) = std::fs::read(path) {
            if b.len() == len {
                return Ok(b);
            }
        }
        if start.elapsed() > timeout {
            bail!("{}: rank 0 did not write the NCCL id within {} s", path.display(), timeout.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(feature = "nccl")]
pub use nccl::NcclGroup;

#[cfg(feature = "nccl")]
mod nccl {
    use super::{Collective, DistEnv};
    use anyhow::{bail, Context, Result};
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CudaStorage, Device, Layout, Shape, Tensor};
    use std::path::Path;

    /// One rank of an NCCL communicator on the CUDA device of this process.
    pub struct NcclGroup {
        op: AllReduce,
        device: Device,
    }

    struct AllReduce {
        comm: std::sync::Arc<Comm>,
    }
    // The communicator is used from the thread that runs the training loop only; candle's
    // CustomOp bounds ask for Send + Sync (candle's own multi-process example does the same).
    unsafe impl Send for AllReduce {}
    unsafe impl Sync for AllReduce {}

    impl NcclGroup {
        /// Join the communicator: rank 0 creates the unique id and writes it to `id_file`
        /// (atomically); the other ranks wait for that file. Rank 0 removes the file once
        /// the communicator is up (every rank has read it by then: init is collective).
        pub fn init(env: &DistEnv, device: &Device, id_file: &Path) -> Result<NcclGroup> {
            let Device::Cuda(cuda) = device else { bail!("NCCL needs a CUDA device (--device cuda), not {device:?}") };
            const LEN: usize = 128;
            let id = if env.rank == 0 {
                let id = Id::new().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {e:?}"))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                super::write_id_file(id_file, &bytes)?;
                id
            } else {
                let bytes = super::read_id_file(id_file, LEN, std::time::Duration::from_secs(600))?;
                let mut internal = [0 as std::ffi::c_char; LEN];
                for (d, s) in internal.iter_mut().zip(&bytes) {
                    *d = *s as std::ffi::c_char;
                }
                Id::uninit(internal)
            };
            let comm = Comm::from_rank(cuda.cuda_stream(), env.rank, env.world_size, id).map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {} of {}): {e:?}", env.rank, env.world_size)).context("NCCL init")?;
            if env.rank == 0 {
                let _ = std::fs::remove_file(id_file);
            }
            Ok(NcclGroup { op: AllReduce { comm: std::sync::Arc::new(comm) }, device: device.clone() })
        }
    }

    impl candle_core::CustomOp1 for AllReduce {
        fn name(&self) -> &'static str {
            "nccl-all-reduce"
        }
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL all-reduce of a CPU tensor")
        }
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            use candle_core::backend::BackendStorage;
            let n = l.shape().elem_count();
            let (start, end) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("all-reduce input must be contiguous".into()))?;
            let dev = s.device().clone();
            let src = s.as_cuda_slice::<f32>()?.slice(start..end);
            let mut dst = dev.alloc_zeros::<f32>(n)?;
            self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}")))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
        }
    }

    impl Collective for NcclGroup {
        fn world_size(&self) -> usize {
            self.op.comm.world_size()
        }
        fn rank(&self) -> usize {
            self.op.comm.rank()
        }
        fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
            let t = t.to_device(&self.device)?.to_dtype(candle_core::DType::F32)?.contiguous()?;
            Ok(t.apply_op1_no_bwd(&self.op)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn local_group_sums_in_rank_order_and_every_rank_agrees() {
        let groups = LocalGroup::new(3);
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let mut outs = Vec::new();
                    for round in 0..20 {
                        let v: Vec<f32> = (0..5).map(|i| (g.rank() * 10 + i + round) as f32 * 0.1).collect();
                        let t = Tensor::from_vec(v, 5, &Device::Cpu).unwrap();
                        outs.push(g.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap());
                    }
                    outs
                })
            })
            .collect();
        let outs: Vec<Vec<Vec<f32>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (r, rounds) in outs.iter().enumerate() {
            for (round, got) in rounds.iter().enumerate() {
                let want: Vec<f32> = (0..5).map(|i| ((i + round) as f32 * 0.1 + (10 + i + round) as f32 * 0.1) + (20 + i + round) as f32 * 0.1).collect();
                assert_eq!(got, &want, "rank {r} round {round}");
            }
        }
    }

    #[test]
    fn a_departed_rank_fails_its_peers_instead_of_hanging() {
        let mut groups = LocalGroup::new(2);
        let g1 = groups.pop().unwrap();
        let g0 = groups.pop().unwrap();
        let h = std::thread::spawn(move || g1.all_reduce_sum(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).map(|_| ()));
        drop(g0);
        let e = h.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("rank 0 left"), "{e}");
    }

    #[test]
    fn bucketed_reduction_averages_every_gradient() {
        let groups = LocalGroup::new(2);
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let r = g.rank() as f32;
                    let dev = Device::Cpu;
                    let mut vars = BTreeMap::new();
                    for (i, shape) in [(0usize, vec![3usize, 4]), (1, vec![7]), (2, vec![2, 2, 2]), (3, vec![100])].into_iter() {
                        vars.insert(format!("w{i}"), Var::zeros(shape, DType::F32, &dev).unwrap());
                    }
                    // loss = sum_i (r + 1) * (i + 1) * sum(w_i)  ->  grad_i = (r + 1)(i + 1) everywhere.
                    let mut loss = Tensor::zeros((), DType::F32, &dev).unwrap();
                    for (i, v) in vars.values().enumerate() {
                        loss = (loss + (v.as_tensor().sum_all().unwrap() * ((r + 1.0) * (i as f32 + 1.0)) as f64).unwrap()).unwrap();
                    }
                    let mut grads = loss.backward().unwrap();
                    // 64 bytes per bucket = 16 values: [w0 (12)], [w1 (7) + w2 (8)], [w3 (100), larger than a bucket].
                    let buckets = reduce_grads(&g, &mut grads, &vars, 64.0 / (1024.0 * 1024.0)).unwrap();
                    let got: Vec<Vec<f32>> = vars.values().map(|v| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
                    (buckets, got)
                })
            })
            .collect();
        for h in handles {
            let (buckets, got) = h.join().unwrap();
            assert_eq!(buckets, 3);
            for (i, g) in got.iter().enumerate() {
                // mean over ranks of (r + 1)(i + 1) = 1.5 (i + 1)
                assert!(g.iter().all(|&x| x == 1.5 * (i as f32 + 1.0)), "w{i}: {g:?}");
            }
        }
    }

    #[test]
    fn shards_are_equal_and_cover_the_batch() {
        assert_eq!(Shard::of(8, 1, 2).unwrap(), Shard { offset: 4, len: 4, global: 8 });
        assert!(Shard::of(8, 0, 1).unwrap().is_whole());
        let e = Shard::of(6, 0, 4).unwrap_err();
        assert_eq!(eostok_models::exit::code_for(&e), 2);
    }

    #[test]
    fn env_parsing() {
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            DistEnv::from_vars(move |k| m.get(k).cloned())
        };
        assert_eq!(env(&[]).unwrap(), None);
        let d = env(&[("WORLD_SIZE", "4"), ("RANK", "2"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")]).unwrap().unwrap();
        assert_eq!((d.rank, d.world_size, d.local_rank, d.master_port), (2, 4, 2, Some(29500)));
        assert_eq!(env(&[("WORLD_SIZE", "1")]).unwrap().unwrap().rank, 0);
        for bad in [vec![("WORLD_SIZE", "2")], vec![("WORLD_SIZE", "2"), ("RANK", "2")], vec![("RANK", "0")], vec![("WORLD_SIZE", "x")], vec![("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_PORT", "99999")]] {
            let e = env(&bad).unwrap_err();
            assert_eq!(eostok_models::exit::code_for(&e), 2, "{bad:?}: {e}");
        }
    }
}
