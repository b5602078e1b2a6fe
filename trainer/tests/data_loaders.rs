//! Data loaders on the committed fixtures (`tests/fixtures/`), bad inputs
//! written to temp dirs, deterministic order and batches. Tests that need
//! the full asset cache print why they skip when it is absent.

use candle_core::Device;
use eostok_models::exit::code_for;
use eostok_train::data::folder::IMAGE_EXTENSIONS;
use eostok_train::data::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn err_of<T>(r: anyhow::Result<T>) -> anyhow::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// The error is bad input (exit 2) and its one line names `what`.
fn assert_bad_input(e: &anyhow::Error, what: &str) {
    let line = eostok_models::exit::one_line(e);
    assert_eq!(code_for(e), 2, "{line}");
    assert!(line.contains(what), "'{line}' does not name '{what}'");
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn idx_fixture_reads_both_splits() {
    let dir = fixtures().join("fashion-mnist");
    let train = IdxDataset::fashion_mnist(&dir, Split::Train).unwrap();
    assert_eq!(train.len(), 256);
    assert_eq!(train.image_size(), (28, 28));
    assert_eq!(train.class_names().len(), 10);
    assert_eq!(train.class_names()[0], "t-shirt");
    assert_eq!(train.class_names()[9], "ankle-boot");
    let mut counts = [0usize; 10];
    for i in 0..train.len() {
        counts[train.label(i) as usize] += 1;
    }
    // Class counts of the slice, from tests/fixtures/README.md.
    assert_eq!(counts, [30, 28, 23, 25, 25, 28, 28, 25, 24, 20]);
    let first = train.pixels(0);
    let nonzero = first.iter().filter(|&&p| p > 0).count();
    assert!(nonzero > 100 && first.iter().any(|&p| p > 200), "first image looks empty ({nonzero} non-zero pixels)");
    let rgb = train.image(0).unwrap();
    assert_eq!(rgb.dimensions(), (28, 28));
    assert!(rgb.pixels().zip(first).all(|(p, &g)| p.0 == [g, g, g]));

    let test = IdxDataset::fashion_mnist(&dir, Split::Test).unwrap();
    assert_eq!(test.len(), 128);
    assert!((0..test.len()).all(|i| test.label(i) < 10));
}

fn write_gz(path: &Path, bytes: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
}

fn idx_bytes(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

#[test]
fn idx_bad_files_are_exit_2_naming_the_file() {
    use eostok_train::data::idx::{read_idx, IMAGES_MAGIC, LABELS_MAGIC};
    let tmp = tempfile::tempdir().unwrap();
    let body = vec![7u8; 3 * 4 * 4];

    // Sanity: a good raw and a good gzipped file read back.
    let good = tmp.path().join("good-images-idx3-ubyte");
    std::fs::write(&good, idx_bytes(IMAGES_MAGIC, &[3, 4, 4], &body)).unwrap();
    let a = read_idx(&good, IMAGES_MAGIC).unwrap();
    assert_eq!((a.dims.clone(), a.data.len()), (vec![3, 4, 4], 48));
    let goodgz = tmp.path().join("good-images-idx3-ubyte.gz");
    write_gz(&goodgz, &idx_bytes(IMAGES_MAGIC, &[3, 4, 4], &body));
    assert_eq!(read_idx(&goodgz, IMAGES_MAGIC).unwrap().data, a.data);

    // Wrong magic: a labels file where images are expected, and garbage.
    let labels = tmp.path().join("labels-as-images.gz");
    write_gz(&labels, &idx_bytes(LABELS_MAGIC, &[3], &[1, 2, 3]));
    let e = err_of(read_idx(&labels, IMAGES_MAGIC));
    assert_bad_input(&e, "labels-as-images.gz");
    assert!(e.to_string().contains("magic"), "{e}");
    let garbage = tmp.path().join("garbage.bin");
    std::fs::write(&garbage, b"hello world, not idx").unwrap();
    assert_bad_input(&err_of(read_idx(&garbage, IMAGES_MAGIC)), "garbage.bin");

    // Truncated body, raw and gzipped.
    let short = tmp.path().join("short-images-idx3-ubyte");
    std::fs::write(&short, idx_bytes(IMAGES_MAGIC, &[3, 4, 4], &body[..40])).unwrap();
    let e = err_of(read_idx(&short, IMAGES_MAGIC));
    assert_bad_input(&e, "short-images-idx3-ubyte");
    assert!(e.to_string().contains("truncated"), "{e}");
    let shortgz = tmp.path().join("short-images-idx3-ubyte.gz");
    write_gz(&shortgz, &idx_bytes(IMAGES_MAGIC, &[3, 4, 4], &body[..40]));
    assert_bad_input(&err_of(read_idx(&shortgz, IMAGES_MAGIC)), "short-images-idx3-ubyte.gz");
    // A gzip stream cut in the middle (the fixture, halved).
    let real = std::fs::read(fixtures().join("fashion-mnist/train-images-idx3-ubyte.gz")).unwrap();
    let cut = tmp.path().join("cut-images-idx3-ubyte.gz");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    assert_bad_input(&err_of(read_idx(&cut, IMAGES_MAGIC)), "cut-images-idx3-ubyte.gz");

    // A header promising 4 GB in a tiny file: refused before allocating.
    let huge = tmp.path().join("huge-images-idx3-ubyte");
    std::fs::write(&huge, idx_bytes(IMAGES_MAGIC, &[u32::MAX, 1000, 1000], &body)).unwrap();
    assert_bad_input(&err_of(read_idx(&huge, IMAGES_MAGIC)), "huge-images-idx3-ubyte");
    let hugegz = tmp.path().join("huge-images-idx3-ubyte.gz");
    write_gz(&hugegz, &idx_bytes(IMAGES_MAGIC, &[60000, 1000, 1000], &body));
    assert_bad_input(&err_of(read_idx(&hugegz, IMAGES_MAGIC)), "huge-images-idx3-ubyte.gz");

    // Trailing bytes after the body.
    let long = tmp.path().join("long-images-idx3-ubyte");
    std::fs::write(&long, idx_bytes(IMAGES_MAGIC, &[3, 4, 4], &[body.as_slice(), &[1, 2]].concat())).unwrap();
    assert_bad_input(&err_of(read_idx(&long, IMAGES_MAGIC)), "long-images-idx3-ubyte");

    // Label count mismatch and out-of-range labels, through the dataset.
    let lab = tmp.path().join("train-labels-idx1-ubyte");
    std::fs::write(&lab, idx_bytes(LABELS_MAGIC, &[2], &[0, 1])).unwrap();
    assert_bad_input(&err_of(IdxDataset::open(&good, &lab, None)), "train-labels-idx1-ubyte");
    std::fs::write(&lab, idx_bytes(LABELS_MAGIC, &[3], &[0, 1, 12])).unwrap();
    let e = err_of(IdxDataset::open(&good, &lab, Some(fashion_mnist_names())));
    assert_bad_input(&e, "label 12");
    let ok = IdxDataset::open(&good, &lab, None).unwrap();
    assert_eq!(ok.class_names().len(), 13, "numeric names 0..=12");
}

fn fashion_mnist_names() -> Vec<String> {
    FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
}

#[test]
fn image_folder_fixture_skips_and_counts_the_corrupt_file() {
    let ds = ImageFolder::open(&fixtures().join("images")).unwrap();
    assert_eq!(ds.class_names(), ["bag", "sneaker", "trouser"]);
    assert_eq!(ds.len(), 12);
    assert_eq!(ds.skipped_count(), 1);
    let s = &ds.skipped()[0];
    assert!(s.path.ends_with("bag/corrupt.png"), "{:?}", s.path);
    assert!(s.warning().contains("corrupt.png") && s.warning().starts_with("warning:"), "{}", s.warning());
    let labels: Vec<u32> = (0..ds.len()).map(|i| ds.label(i)).collect();
    assert_eq!(labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    let (img, label) = ds.get(4, 32, false).unwrap();
    assert_eq!((img.dimensions(), label), ((32, 32), 1));
    // The fixture is a Fashion-MNIST image zero-padded by 2: grey, black border.
    assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
    assert!(ds.describe().contains("1 unreadable skipped"));
    assert!(IMAGE_EXTENSIONS.contains(&"webp"));
}

#[test]
fn empty_or_missing_datasets_are_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_bad_input(&err_of(ImageFolder::open(&missing)), "nope");
    assert_bad_input(&err_of(ImageFolder::open(tmp.path())), &tmp.path().display().to_string());
    // Class folders with no images (a text file and an unreadable "png").
    std::fs::create_dir_all(tmp.path().join("cats")).unwrap();
    std::fs::write(tmp.path().join("cats/readme.txt"), "x").unwrap();
    std::fs::write(tmp.path().join("cats/broken.png"), "not a png").unwrap();
    let e = err_of(ImageFolder::open(tmp.path()));
    assert_bad_input(&e, "empty dataset");
    assert!(e.to_string().contains("1 unreadable"), "{e}");
    // Through --data as well.
    assert_bad_input(&err_of(resolve_data(missing.to_str().unwrap(), None)), "nope");
    assert_bad_input(&err_of(resolve_data(tmp.path().to_str().unwrap(), None)), "empty dataset");
    // An emoji root without images, and one without emoji.json.
    let emo = tmp.path().join("emo");
    std::fs::create_dir_all(&emo).unwrap();
    std::fs::write(emo.join("emoji.json"), r#"[{"image":"1f600.png","category":"Smileys & Emotion"}]"#).unwrap();
    assert_bad_input(&err_of(EmojiDataset::open(&emo)), "empty dataset");
    std::fs::write(emo.join("emoji.json"), "{not json").unwrap();
    assert_bad_input(&err_of(EmojiDataset::open(&emo)), "emoji.json");
    assert_bad_input(&err_of(EmojiDataset::open(tmp.path())), "emoji.json");
}

#[test]
fn emoji_fixture() {
    let ds = EmojiDataset::open(&fixtures().join("emoji")).unwrap();
    assert_eq!(ds.len(), 12);
    assert_eq!(ds.class_names(), ["Animals & Nature", "Food & Drink", "Smileys & Emotion", "Travel & Places"]);
    assert!(ds.skipped().is_empty());
    // File order: smileys first.
    assert!(ds.path(0).ends_with("img/google/64/1f600.png"));
    assert_eq!(ds.label(0), 2);
    let img = ds.image(0).unwrap();
    assert_eq!(img.dimensions(), (64, 64));
    // Transparent corner composited on white; the face is not white.
    assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    assert_ne!(img.get_pixel(32, 32).0, [255, 255, 255]);
    let (small, _) = ds.get(0, 32, false).unwrap();
    assert_eq!(small.dimensions(), (32, 32));
}

#[test]
fn resolve_data_paths_and_keywords() {
    let f = fixtures();
    let ds = resolve_data(f.join("images").to_str().unwrap(), None).unwrap();
    assert_eq!((ds.len(), ds.class_names().len()), (12, 3));
    let ds = resolve_data(f.join("fashion-mnist").to_str().unwrap(), None).unwrap();
    assert_eq!(ds.len(), 256);
    assert_eq!(ds.class_names()[7], "sneaker");
    let test_file = f.join("fashion-mnist/t10k-images-idx3-ubyte.gz");
    assert_eq!(resolve_data(test_file.to_str().unwrap(), None).unwrap().len(), 128);
    assert_eq!(resolve_data(f.join("emoji").to_str().unwrap(), None).unwrap().len(), 12);
    // Keywords against an empty cache: one line pointing at fetch-assets.
    let tmp = tempfile::tempdir().unwrap();
    for kw in ["fashion-mnist", "fashion-mnist-test", "emoji"] {
        let e = err_of(resolve_data(kw, Some(tmp.path())));
        assert_bad_input(&e, "scripts/fetch-assets");
        assert!(e.to_string().contains(kw), "{e}");
    }
    let e = err_of(resolve_data("no-such-dataset", None));
    assert_bad_input(&e, "fashion-mnist-test");
    let e = err_of(resolve_data(f.join("README.md").to_str().unwrap(), None));
    assert_bad_input(&e, "README.md");
}

#[test]
fn shuffling_is_seeded_and_resumable() {
    let (a, fa) = epoch_order(100, 7, 0, true);
    let (b, fb) = epoch_order(100, 7, 0, true);
    assert_eq!((&a, &fa), (&b, &fb));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<u32>>(), "a permutation");
    assert_ne!(a, (0..100).collect::<Vec<u32>>());
    assert_ne!(epoch_order(100, 8, 0, true).0, a, "another seed, another order");
    assert_ne!(epoch_order(100, 7, 1, true).0, a, "another epoch, another order");
    assert!(fa.iter().any(|&f| f) && fa.iter().any(|&f| !f));
    assert!(epoch_order(100, 7, 0, false).1.iter().all(|&f| !f));
    assert_eq!(epoch_order(100, 7, 0, false).0, a, "flips do not change the order");

    // 7 batches of 5 over 12 samples cross two epoch boundaries.
    let mut full = Sampler::new(12, 3, true).unwrap();
    let all: Vec<Vec<Pick>> = (0..7).map(|_| full.next_picks(5)).collect();
    let mut first = Sampler::new(12, 3, true).unwrap();
    for batch in all.iter().take(3) {
        assert_eq!(&first.next_picks(5), batch);
    }
    let pos = first.position();
    assert_eq!(pos, DataPosition { epoch: 1, index: 3 });
    let json = serde_json::to_string(&pos).unwrap();
    let pos: DataPosition = serde_json::from_str(&json).unwrap();
    let mut resumed = Sampler::resume(12, 3, true, pos).unwrap();
    for batch in all.iter().skip(3) {
        assert_eq!(&resumed.next_picks(5), batch);
    }
    assert_eq!(resumed.position(), full.position());
    // Each epoch visits every sample once.
    let flat: Vec<usize> = all.concat().iter().map(|p| p.sample).collect();
    let mut e0 = flat[..12].to_vec();
    e0.sort();
    assert_eq!(e0, (0..12).collect::<Vec<_>>());
    assert_eq!(code_for(&err_of(Sampler::resume(12, 3, true, DataPosition { epoch: 0, index: 13 }))), 2);
    assert_eq!(code_for(&err_of(Sampler::new(0, 3, true))), 2);
}

#[test]
fn batches_have_shape_range_and_do_not_depend_on_threads() {
    let ds: std::sync::Arc<dyn Dataset> = std::sync::Arc::new(ImageFolder::open(&fixtures().join("images")).unwrap());
    let dev = Device::Cpu;
    let mut loader = Loader::new(ds.clone(), 16, 11, true, &dev).unwrap();
    let b = loader.next_batch(5).unwrap();
    assert_eq!(b.images.dims(), &[5, 3, 16, 16]);
    assert_eq!(b.labels.len(), 5);
    let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    assert!(lo >= -1.0 && hi <= 1.0 && lo < -0.99 && hi > 0.5, "range [{lo}, {hi}]");
    for (p, &l) in b.picks.iter().zip(&b.labels) {
        assert_eq!(ds.label(p.sample), l);
    }

    // Same picks on one thread and on four: identical bits.
    let picks: Vec<Pick> = (0..12).map(|i| Pick { sample: i, flip: i % 3 == 0 }).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| load_batch(ds.as_ref(), &picks, 20, &dev).unwrap())
    };
    let one = run(1).images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let four = run(4).images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(one, four);

    // A flipped sample is the mirror image of the unflipped one.
    let (plain, _) = ds.get_chw(0, 16, false).unwrap();
    let (flipped, _) = ds.get_chw(0, 16, true).unwrap();
    for c in 0..3 {
        for y in 0..16 {
            for x in 0..16 {
                assert_eq!(plain[c * 256 + y * 16 + x], flipped[c * 256 + y * 16 + 15 - x]);
            }
        }
    }

    // Resume: a loader restarted from the saved position continues the stream.
    let mut a = Loader::new(ds.clone(), 16, 5, true, &dev).unwrap();
    a.next_batch(7).unwrap();
    let pos = a.position();
    let next = a.next_batch(7).unwrap();
    let mut r = Loader::resume(ds.clone(), 16, 5, true, pos, &dev).unwrap();
    let again = r.next_batch(7).unwrap();
    assert_eq!(next.picks, again.picks);
    let d = (next.images - again.images).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
}

/// The full data from the asset cache, when it is there.
#[test]
fn cached_datasets_when_present() {
    let cache = eostok_models::nets::asset_dir();
    if !cache.join("fashion-mnist/train-images-idx3-ubyte.gz").is_file() || !cache.join("emoji/emoji.json").is_file() {
        println!("skipping: no asset cache at {} (run scripts/fetch-assets)", cache.display());
        return;
    }
    let train = resolve_data("fashion-mnist", None).unwrap();
    assert_eq!((train.len(), train.class_names().len()), (60000, 10));
    let test = resolve_data("fashion-mnist-test", None).unwrap();
    assert_eq!(test.len(), 10000);
    let mut counts = [0usize; 10];
    for i in 0..test.len() {
        counts[test.label(i) as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    let emoji = resolve_data("emoji", None).unwrap();
    assert_eq!(emoji.class_names().len(), 9);
    assert!(!emoji.class_names().iter().any(|c| c == "Component"));
    assert_eq!(emoji.len(), 1906);
    println!("fashion-mnist {} / {}, emoji {} in {:?}", train.len(), test.len(), emoji.len(), emoji.class_names());
    let t = std::time::Instant::now();
    let picks: Vec<Pick> = (0..256).map(|i| Pick { sample: i * 7, flip: false }).collect();
    load_batch(emoji.as_ref(), &picks, 64, &Device::Cpu).unwrap();
    println!("emoji: 256 images decoded in {:.3} s", t.elapsed().as_secs_f64());
}
