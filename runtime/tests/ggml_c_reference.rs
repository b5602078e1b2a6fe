//! Opt-in: our quantizers are bit-exact ports of ggml's `quantize_row_*_ref`. Runs only when
//! `EOSTOK_GGML_REF` names a binary built by `tests/ggml_ref/build_ref.py <ggml checkout> <bin>`
//! (needs gcc and a ggml source tree, so it is not part of the default test run).

mod common;

use common::rng::Rng;
use eostok_runtime::quant::{self, GgmlType};

#[test]
fn quantizers_are_bit_exact_with_ggml_c() {
    let Some(binary) = std::env::var_os("EOSTOK_GGML_REF") else {
        eprintln!("skipped: set EOSTOK_GGML_REF to a binary from tests/ggml_ref/build_ref.py");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.f32"), dir.path().join("out.bin"));
    let mut rng = Rng::new(5);
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ];
    for ty in types {
        for (dist, scale) in [1.0f32, 0.01, 1e-4, 30.0, 0.3, 1.0].into_iter().enumerate() {
            let n = 256 * 64;
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    scale
                        * match dist {
                            0 | 2 => rng.normal(),
                            1 => rng.uniform(),
                            3 if rng.below(30) == 0 => 10.0 * rng.normal(),
                            3 => rng.normal(),
                            4 => rng.unit() + 0.2,
                            _ => ((i % 37) as f32 - 18.0) * 0.25, // exact ties
                        }
                })
                .collect();
            std::fs::write(
                &input,
                x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
            )
            .unwrap();
            let status = std::process::Command::new(&binary)
                .arg(ty.name())
                .arg(n.to_string())
                .arg(&input)
                .arg(&output)
                .status()
                .unwrap();
            assert!(status.success(), "{ty}: reference binary failed");
            let theirs = std::fs::read(&output).unwrap();
            let mut ours = vec![0u8; ty.row_size(n).unwrap()];
            quant::quantize_row(ty, &x, &mut ours).unwrap();
            let differing = ours
                .chunks(ty.type_size())
                .zip(theirs.chunks(ty.type_size()))
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differing, 0,
                "{ty}, distribution {dist}: {differing} blocks differ from ggml"
            );
        }
    }
}
