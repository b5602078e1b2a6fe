//! The statistics behind `eostok-eval`: feature mean and covariance, the
//! Fréchet distance between two Gaussians, k-NN precision/recall
//! (Kynkäänniemi et al. 2019) and an Inception-Score-like score.
//!
//! Everything here is plain f64 linear algebra (nalgebra); which network
//! made the features is the caller's business, and every printed name says
//! it (`FD_effnet-lite0`, never a bare "FID").
//!
//! # Fréchet distance
//!
//! `FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`.
//! `S1 S2` is not symmetric, but with `R = sqrt(S1)` (symmetric PSD),
//! `R S2 R` is symmetric PSD and similar to `S1 S2`, so
//! `tr sqrt(S1 S2) = sum_i sqrt(lambda_i(R S2 R))`: two symmetric
//! eigendecompositions in f64, no complex arithmetic. Eigenvalues below zero
//! are rounding noise of rank-deficient covariances (fewer samples than
//! dimensions) and are clamped to zero. If the product still has an
//! eigenvalue below `-1e-6 * max` or a non-finite value, `eps * I`
//! (`eps = 1e-6`, as pytorch-fid) is added to both covariances and the
//! distance is computed again; the result says so.
//!
//! When either set has fewer samples than dimensions,
//! [`frechet_distance_auto`] takes an exact shortcut through the features
//! themselves (the nuclear norm of the cross Gram matrix, see
//! [`frechet_distance_features`]).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Offset added to both covariances when the product is near-singular.
pub const FD_EPS: f64 = 1e-6;

/// Mean and covariance (unbiased, `n - 1`) of a set of feature vectors.
#[derive(Debug, Clone)]
pub struct Stats {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub count: usize,
}

impl Stats {
    /// From `n` row vectors of width `d`, stored row-major in `feats`.
    pub fn from_features(feats: &[f32], d: usize) -> Stats {
        assert!(d > 0 && feats.len().is_multiple_of(d), "features: {} values for width {d}", feats.len());
        let n = feats.len() / d;
        let x = DMatrix::<f64>::from_fn(n, d, |i, j| feats[i * d + j] as f64);
        let mean = if n == 0 { DVector::zeros(d) } else { x.row_sum().transpose() / n as f64 };
        let mut centered = x;
        for mut row in centered.row_iter_mut() {
            row -= mean.transpose();
        }
        let denom = n.saturating_sub(1).max(1) as f64;
        let cov = (centered.transpose() * &centered) / denom;
        Stats { mean, cov, count: n }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// Symmetric eigendecomposition with the input symmetrised first (the
/// covariance products are symmetric up to rounding).
fn sym_eigen(a: &DMatrix<f64>) -> SymmetricEigen<f64, nalgebra::Dyn> {
    let s = (a + a.transpose()) * 0.5;
    SymmetricEigen::new(s)
}

/// Principal square root of a symmetric positive semi-definite matrix:
/// `V diag(sqrt(max(lambda, 0))) V^T`.
pub fn sqrtm_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let e = sym_eigen(a);
    let roots = e.eigenvalues.map(|l| l.max(0.0).sqrt());
    let scaled = &e.eigenvectors * DMatrix::from_diagonal(&roots);
    scaled * e.eigenvectors.transpose()
}

/// `tr sqrt(A B)` for symmetric PSD `A`, `B`, and the smallest eigenvalue
/// of `sqrt(A) B sqrt(A)` relative to its largest (negative: rounding or
/// a near-singular product).
pub fn trace_sqrt_product(a: &DMatrix<f64>, b: &DMatrix<f64>) -> (f64, f64) {
    let r = sqrtm_psd(a);
    let m = &r * b * &r;
    let e = sym_eigen(&m);
    let max = e.eigenvalues.iter().cloned().fold(0f64, f64::max);
    let min = e.eigenvalues.iter().cloned().fold(f64::INFINITY, f64::min);
    let rel_min = if max > 0.0 { min / max } else { 0.0 };
    let tr = e.eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).sum();
    if e.eigenvalues.iter().any(|l| !l.is_finite()) {
        return (f64::NAN, f64::NAN);
    }
    (tr, rel_min)
}

/// A Fréchet distance and how it was computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frechet {
    pub fd: f64,
    /// `eps * I` was added to both covariances (see the module docs).
    pub eps_fallback: bool,
}

/// Fréchet distance between two Gaussians (see the module docs).
pub fn frechet_distance(s1: &Stats, s2: &Stats) -> Frechet {
    assert_eq!(s1.dim(), s2.dim(), "feature widths differ");
    let diff = (&s1.mean - &s2.mean).norm_squared();
    let fd_with = |c1: &DMatrix<f64>, c2: &DMatrix<f64>| -> (f64, f64) {
        let (tr_sqrt, rel_min) = trace_sqrt_product(c1, c2);
        (diff + c1.trace() + c2.trace() - 2.0 * tr_sqrt, rel_min)
    };
    let (fd, rel_min) = fd_with(&s1.cov, &s2.cov);
    if fd.is_finite() && rel_min >= -1e-6 {
        return Frechet { fd: fd.max(0.0), eps_fallback: false };
    }
    let off = DMatrix::<f64>::identity(s1.dim(), s1.dim()) * FD_EPS;
    let (fd, _) = fd_with(&(&s1.cov + &off), &(&s2.cov + &off));
    Frechet { fd: fd.max(0.0), eps_fallback: true }
}

/// Rows of `feats` (width `d`) minus their mean, and the mean.
fn centered(feats: &[f32], d: usize) -> (DMatrix<f64>, DVector<f64>) {
    let mut x = to_matrix(feats, d);
    let n = x.nrows().max(1);
    let mean = x.row_sum().transpose() / n as f64;
    for mut row in x.row_iter_mut() {
        row -= mean.transpose();
    }
    (x, mean)
}

/// The same Fréchet distance as [`frechet_distance`] of the two sets'
/// [`Stats`], computed from the features (row-major, width `d`). With
/// centred features `A1` (`n1 x d`) and `A2`, `S1 S2 = A1^T A1 A2^T A2 / c`
/// (`c = (n1 - 1)(n2 - 1)`) has the same non-zero eigenvalues as
/// `(A1 A2^T)(A1 A2^T)^T / c`, so `tr sqrt(S1 S2)` is the sum of the
/// singular values of `A1 A2^T` over `sqrt(c)`: exact, and for fewer
/// samples than dimensions much cheaper than `d x d` eigenproblems and free
/// of the rounding noise of rank-deficient covariances.
pub fn frechet_distance_features(f1: &[f32], f2: &[f32], d: usize) -> Frechet {
    let (a1, m1) = centered(f1, d);
    let (a2, m2) = centered(f2, d);
    let c1 = a1.nrows().saturating_sub(1).max(1) as f64;
    let c2 = a2.nrows().saturating_sub(1).max(1) as f64;
    let cross = &a1 * a2.transpose();
    let nuclear: f64 = cross.singular_values().iter().sum();
    let fd = (&m1 - &m2).norm_squared() + a1.norm_squared() / c1 + a2.norm_squared() / c2 - 2.0 * nuclear / (c1 * c2).sqrt();
    Frechet { fd: fd.max(0.0), eps_fallback: false }
}

/// [`frechet_distance_features`] when either set has fewer samples than
/// dimensions (cheaper, exact), else [`frechet_distance`] of the stats.
pub fn frechet_distance_auto(s1: &Stats, f1: &[f32], s2: &Stats, f2: &[f32]) -> Frechet {
    let d = s1.dim();
    if s1.count.min(s2.count) < d && f1.len() == s1.count * d && f2.len() == s2.count * d {
        frechet_distance_features(f1, f2, d)
    } else {
        frechet_distance(s1, s2)
    }
}

/// Squared Euclidean distances between rows of `a` (`na x d`) and rows of
/// `b` (`nb x d`), row-major `na x nb`, in f64, clamped at zero.
fn sq_dists(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    let na: Vec<f64> = a.row_iter().map(|r| r.norm_squared()).collect();
    let nb: Vec<f64> = b.row_iter().map(|r| r.norm_squared()).collect();
    let mut g = a * b.transpose();
    for i in 0..g.nrows() {
        for j in 0..g.ncols() {
            g[(i, j)] = (na[i] + nb[j] - 2.0 * g[(i, j)]).max(0.0);
        }
    }
    g
}

fn to_matrix(feats: &[f32], d: usize) -> DMatrix<f64> {
    let n = feats.len() / d;
    DMatrix::from_fn(n, d, |i, j| feats[i * d + j] as f64)
}

/// Rows processed per block of the distance matrices (bounds memory).
const CHUNK: usize = 1024;

/// Squared radius of each point's k-th nearest neighbour in its own set
/// (itself excluded). With fewer than `k + 1` points every radius is
/// infinite (the manifold is the whole space).
fn knn_radii(x: &DMatrix<f64>, k: usize) -> Vec<f64> {
    let n = x.nrows();
    if n <= k {
        return vec![f64::INFINITY; n];
    }
    let mut radii = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        let d = sq_dists(&x.rows(start, rows).into_owned(), x);
        for i in 0..rows {
            let mut row: Vec<f64> = d.row(i).iter().cloned().collect();
            // Index k of the sorted row: 0 is the point itself.
            row[start + i] = -1.0;
            row.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
            radii.push(row[k]);
        }
    }
    radii
}

/// Fraction of the rows of `q` that fall inside at least one ball
/// (centre row of `x`, squared radius `radii`).
fn coverage(x: &DMatrix<f64>, radii: &[f64], q: &DMatrix<f64>) -> f64 {
    let n = q.nrows();
    if n == 0 {
        return 0.0;
    }
    let mut inside = 0usize;
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        let d = sq_dists(&q.rows(start, rows).into_owned(), x);
        for i in 0..rows {
            if d.row(i).iter().zip(radii).any(|(&dist, &r)| dist <= r) {
                inside += 1;
            }
        }
    }
    inside as f64 / n as f64
}

/// Improved precision and recall (Kynkäänniemi et al. 2019): the real and
/// the generated manifolds are unions of balls reaching each point's k-th
/// nearest neighbour in its own set. Precision = fraction of generated
/// samples inside the real manifold; recall = fraction of real samples
/// inside the generated manifold. Features are row-major with width `d`.
pub fn precision_recall(real: &[f32], fake: &[f32], d: usize, k: usize) -> (f64, f64) {
    let (r, f) = (to_matrix(real, d), to_matrix(fake, d));
    let rr = knn_radii(&r, k);
    let rf = knn_radii(&f, k);
    (coverage(&r, &rr, &f), coverage(&f, &rf, &r))
}

/// Inception-Score-like score from classifier logits (`n x classes`,
/// row-major): `exp(E_x KL(p(y|x) || p(y)))` per split, then the mean and
/// the standard deviation over `splits` equal consecutive splits.
pub fn inception_score(logits: &[f32], classes: usize, splits: usize) -> (f64, f64) {
    let n = logits.len() / classes;
    let probs: Vec<Vec<f64>> = logits
        .chunks(classes)
        .map(|row| {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        })
        .collect();
    let splits = splits.clamp(1, n.max(1));
    let mut scores = Vec::with_capacity(splits);
    for s in 0..splits {
        let part = &probs[s * n / splits..(s + 1) * n / splits];
        if part.is_empty() {
            continue;
        }
        let mut py = vec![0f64; classes];
        for p in part {
            for (a, b) in py.iter_mut().zip(p) {
                *a += b / part.len() as f64;
            }
        }
        let kl: f64 = part.iter().map(|p| p.iter().zip(&py).filter(|(&a, _)| a > 0.0).map(|(&a, &b)| a * (a.ln() - b.ln())).sum::<f64>()).sum::<f64>()
            / part.len() as f64;
        scores.push(kl.exp());
    }
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / scores.len().max(1) as f64;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inception_score_bounds() {
        // Confident and uniform over 4 classes: IS = 4. All the same class: 1.
        let mut l = vec![];
        for i in 0..8 {
            let mut row = vec![-50f32; 4];
            row[i % 4] = 50.0;
            l.extend(row);
        }
        assert!((inception_score(&l, 4, 1).0 - 4.0).abs() < 1e-9);
        let same: Vec<f32> = (0..8).flat_map(|_| [50f32, -50., -50., -50.]).collect();
        assert!((inception_score(&same, 4, 2).0 - 1.0).abs() < 1e-9);
    }
}
