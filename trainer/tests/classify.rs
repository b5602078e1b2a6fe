//! eostok-eval train-classifier / classify on the repo's Fashion-MNIST
//! fixtures and the bundled model: real files, the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn eval(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eostok-eval")).args(args).output().unwrap()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

#[test]
fn classifier_trains_on_fixtures_and_labels_images() {
    let fx = root().join("tests/fixtures/fashion-mnist");
    let (train, test) = (fx.join("train-images-idx3-ubyte.gz"), fx.join("t10k-images-idx3-ubyte.gz"));
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("clf");
    let o = eval(&["train-classifier", "--data", train.to_str().unwrap(), "--test", test.to_str().unwrap(), "--epochs", "40", "--out", stem.to_str().unwrap(), "--json", "-q"]);
    let info = json(&o);
    assert_eq!(info["schema"], "eostok-classifier/1");
    assert!(dir.path().join("clf.safetensors").is_file() && dir.path().join("clf.json").is_file());
    let (tr, te) = (info["train_accuracy"].as_f64().unwrap(), info["test_accuracy"].as_f64().unwrap());
    // A few hundred images: the MLP fits them, and generalises well above chance (10%).
    assert!(tr > 0.9, "train accuracy {tr}");
    assert!(te > 0.4, "test accuracy {te}");

    // Classify the training fixtures: per class 3 images, the counts add up,
    // and accuracy matches what the classifier saw.
    let o = eval(&["classify", train.to_str().unwrap(), "-n", "3", "--classifier", stem.to_str().unwrap(), "--json", "-q"]);
    let r = json(&o);
    assert_eq!(r["schema"], "eostok-eval/classify/1");
    let mut keys: Vec<_> = r.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["accuracy", "class_names", "classifier_test_accuracy", "confusion", "counts", "min_class_accuracy", "per_class", "sampling", "schema", "source"]);
    assert!(r["sampling"].is_null(), "a dataset is not sampled: {}", r["sampling"]);
    let counts: Vec<u64> = r["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    assert_eq!(counts.len(), 10);
    assert!(counts.iter().all(|&c| c == 3), "{counts:?}");
    assert!(r["accuracy"].as_f64().unwrap() > 0.8, "{}", r["accuracy"]);
    assert_eq!(r["classifier_test_accuracy"].as_f64().unwrap(), te);

    // The bundled model: 2 samples per class, all counted, confusion rows sum to 2.
    let model = root().join("runtime/assets/default.gguf");
    let o = eval(&["classify", model.to_str().unwrap(), "-n", "2", "--classifier", stem.to_str().unwrap(), "--json", "-q"]);
    let r = json(&o);
    for row in r["confusion"].as_array().unwrap() {
        assert_eq!(row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 2);
    }
    // Sampled with the file's recommended cfg 1.5, and the JSON says so.
    assert_eq!(
        r["sampling"],
        serde_json::json!({"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg": 1.5, "from_file": ["cfg 1.5"]})
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("recommended cfg 1.5"));
    // The same with the flag: the same images, so the same confusion; a flag overrides the file.
    let same = json(&eval(&["classify", model.to_str().unwrap(), "-n", "2", "--cfg", "1.5", "--classifier", stem.to_str().unwrap(), "--json", "-q"]));
    assert_eq!(same["confusion"], r["confusion"]);
    assert_eq!(same["sampling"]["from_file"], serde_json::json!([]));
    let unguided = json(&eval(&["classify", model.to_str().unwrap(), "-n", "2", "--cfg", "1", "--top-k", "50", "--classifier", stem.to_str().unwrap(), "--json", "-q"]));
    assert_eq!(unguided["sampling"], serde_json::json!({"temperature": 1.0, "top_k": 50, "top_p": 1.0, "cfg": 1.0, "from_file": []}));
    let text = eval(&["classify", model.to_str().unwrap(), "-n", "1", "--classifier", stem.to_str().unwrap(), "-q"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("sneaker") && text.contains("lowest class accuracy"), "{text}");
    assert!(text.contains("sampling: temperature 1, top-k 0, top-p 1, cfg 1.5 (cfg 1.5 from the file's recommendation)"), "{text}");
}

#[test]
fn classify_without_a_classifier_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("runtime/assets/default.gguf");
    let o = eval(&["classify", model.to_str().unwrap(), "--classifier", dir.path().join("none").to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train-classifier") && err.contains("none.safetensors"), "{err}");
}
